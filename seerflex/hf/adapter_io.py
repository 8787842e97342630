"""Adapter files: ``adapter_config.json`` + ``adapter_model.safetensors``, PEFT's names and layout.

The config holds ``SeerFlexConfig.to_dict()`` (never runtime options; older adapters that stored
``compile``/``dense_below``/``check_finite`` load with them as runtime defaults) plus the fields that tie the gates to a base model
(``peft_type: "SEERFLEX"``, base model name and revision, layer count, head geometry, gated layers,
whether Q is projected). The weights are the gate matrices only, under model-class independent keys
``model.layers.{i}.self_attn.seerflex_gate.{q_weight,k_weight}``. Every check against the model
runs on the config and the safetensors header before a tensor is read or a weight is touched.
Loading never unpickles: safetensors here, ``torch.load(weights_only=True)`` for original gates
(``original.py``); ``loading.py`` finds either kind in a folder or hub repo.
"""

from __future__ import annotations

import hashlib
import json
import os
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Callable

from safetensors import safe_open
from safetensors.torch import load_file, save_file
import torch
from torch import Tensor

from seerflex.config import SeerFlexConfig
from seerflex.files import atomic_write
from seerflex.gates.gate_type import GateType
from seerflex.hf.families import ModelSpec
from seerflex.runtime import LEGACY_ADAPTER_FIELDS
from seerflex.version import __version__

ADAPTER_CONFIG = "adapter_config.json"
ADAPTER_WEIGHTS = "adapter_model.safetensors"
PEFT_TYPE = "SEERFLEX"
DIGEST = "seerflex_sha256"  # safetensors metadata key: checksum of the gate tensors
FORMAT_VERSION = 1
GEOMETRY = ("num_hidden_layers", "num_attention_heads", "num_key_value_heads", "head_dim")
REQUIRED_META = (*GEOMETRY, "gated_layers", "project_q")
OPTIONAL_META = ("peft_type", "format_version", "seerflex_version", "model_type", "base_model_name_or_path",
                 "revision")


def gate_key(layer_idx: int, param: str) -> str:
    return f"model.layers.{layer_idx}.self_attn.seerflex_gate.{param}"


def default_project_q(config: SeerFlexConfig, head_dim: int) -> bool:
    """AttnGate's rule: Q is projected unless it could only be a square map of one pooling."""
    return len(GateType.parse(config.gate_type).q_pools) > 1 or config.gate_hidden_size != head_dim


def expected_shapes(config: SeerFlexConfig, meta: dict[str, Any]) -> dict[str, tuple[int, ...]]:
    """Tensor name -> shape the config and geometry in ``meta`` call for."""
    gate_type, d, h = GateType.parse(config.gate_type), meta["head_dim"], meta["num_attention_heads"]
    shapes = {}
    for i in meta["gated_layers"]:
        if meta["project_q"]:
            shapes[gate_key(i, "q_weight")] = (h, len(gate_type.q_pools) * d, config.gate_hidden_size)
        shapes[gate_key(i, "k_weight")] = (h, len(gate_type.k_pools) * d, config.gate_hidden_size)
    return shapes


@dataclass
class GateCheckpoint:
    """Gates read from a folder or the hub: config, metadata, tensor shapes, and a deferred loader."""

    source: str
    config: SeerFlexConfig
    meta: dict[str, Any]
    shapes: dict[str, tuple[int, ...]]
    load: Callable[[], dict[str, Tensor]]
    runtime: dict[str, Any] = field(default_factory=dict)  # runtime options older adapters saved

    def check_fits(self, spec: ModelSpec) -> None:
        """Raise one ValueError listing every way these gates do not fit the model (nothing is loaded)."""
        problems = [f"{k}: gates {self.meta[k]}, model {getattr(spec, k)}" for k in GEOMETRY
                    if self.meta[k] != getattr(spec, k)]
        extra = sorted(set(self.meta["gated_layers"]) - set(spec.gated_layers))
        if extra:
            problems.append(f"gates for layers {extra}, which the model does not have or which use sliding-window "
                            f"attention (gateable layers: {spec.gated_layers})")
        if not problems:
            problems = self.shape_problems()
        if problems:
            raise ValueError(f"gates from {self.source} do not fit this model:\n  - " + "\n  - ".join(problems))
        if self.meta.get("model_type") not in (None, spec.model_type):
            warnings.warn(f"gates from {self.source} were made for model_type '{self.meta['model_type']}', "
                          f"loading them into '{spec.model_type}' (shapes match)", stacklevel=3)

    def shape_problems(self) -> list[str]:
        """How the stored tensors differ from what the checkpoint's own config and geometry call for."""
        expected = expected_shapes(self.config, self.meta)
        missing, unexpected = sorted(set(expected) - set(self.shapes)), sorted(set(self.shapes) - set(expected))
        wrong = [f"{k} {self.shapes[k]} (expected {expected[k]})" for k in sorted(set(expected) & set(self.shapes))
                 if tuple(self.shapes[k]) != expected[k]]
        problems = [f"{label}: {', '.join(items[:4])}{' ...' if len(items) > 4 else ''}"
                    for label, items in (("missing tensors", missing), ("unexpected tensors", unexpected),
                                         ("wrong shapes", wrong)) if items]
        q_width = len(GateType.parse(self.config.gate_type).q_pools) * self.meta["head_dim"]
        if not self.meta["project_q"] and q_width != self.config.gate_hidden_size:
            problems.append(f"Q is not projected, so gate_hidden_size ({self.config.gate_hidden_size}) must equal "
                            f"head_dim x Q poolings ({q_width})")
        return problems

    def save(self, directory: str | os.PathLike) -> None:
        """Write in the seerflex adapter format (how ``seerflex convert`` writes imported gates)."""
        write_adapter(directory, self.config, self.meta, self.load())


def write_adapter(directory: str | os.PathLike, config: SeerFlexConfig, meta: dict[str, Any],
                  tensors: dict[str, Tensor]) -> None:
    """Write both files atomically (temp file + ``os.replace``): readers never see half a file."""
    out = Path(directory)
    out.mkdir(parents=True, exist_ok=True)
    body = {k: meta.get(k) for k in (*REQUIRED_META, "model_type", "base_model_name_or_path", "revision")}
    body |= {"peft_type": PEFT_TYPE, "format_version": FORMAT_VERSION, "seerflex_version": __version__}
    body |= config.to_dict()
    weights = {k: v.detach().to("cpu").contiguous() for k, v in tensors.items()}
    metadata = {"format": "pt", DIGEST: tensors_digest(weights)}  # in the file itself: no window between two files
    atomic_write(out / ADAPTER_WEIGHTS, lambda tmp: save_file(weights, tmp, metadata=metadata))
    atomic_write(out / ADAPTER_CONFIG, lambda tmp: Path(tmp).write_text(json.dumps(body, indent=2, sort_keys=True) + "\n"))


def read_adapter(source: str, config_path: Path, weights_path: Path) -> GateCheckpoint:
    try:
        raw = json.loads(config_path.read_text())
    except json.JSONDecodeError as err:
        raise ValueError(f"{config_path} is not valid JSON (line {err.lineno}, column {err.colno}): {err.msg}") from None
    if not isinstance(raw, dict):
        raise ValueError(f"{config_path} must hold a JSON object, got {type(raw).__name__}")
    if raw.get("peft_type") != PEFT_TYPE:
        raise ValueError(f"{source}: {ADAPTER_CONFIG} has peft_type {raw.get('peft_type')!r}, not {PEFT_TYPE!r}; "
                         "adapters of other PEFT methods load with peft.PeftModel.from_pretrained")
    if raw.get("format_version") != FORMAT_VERSION:
        raise ValueError(f"{source}: adapter format version {raw.get('format_version')!r} is not supported "
                         f"(this seerflex reads version {FORMAT_VERSION})")
    missing = [k for k in REQUIRED_META if k not in raw]
    if missing:
        raise ValueError(f"{source}: {ADAPTER_CONFIG} lacks {missing}")
    meta = {k: raw.pop(k) for k in (*REQUIRED_META, *OPTIONAL_META) if k in raw}
    legacy_runtime = {k: raw.pop(k) for k in LEGACY_ADAPTER_FIELDS if k in raw}  # runtime options, pre-split
    try:
        config = SeerFlexConfig.from_dict(raw)
    except (TypeError, ValueError) as err:
        raise ValueError(f"{config_path}: {err}") from None
    try:
        with safe_open(str(weights_path), framework="pt") as f:
            shapes = {k: tuple(f.get_slice(k).get_shape()) for k in f.keys()}
            expected = (f.metadata() or {}).get(DIGEST)
        tensors = load_file(str(weights_path)) if expected else None  # gates are small: verify before use
    except Exception as err:  # noqa: BLE001 -- safetensors raises its own error types for damaged files
        raise ValueError(f"{weights_path} is not a readable safetensors file ({err})") from None
    if tensors is not None and tensors_digest(tensors) != expected:
        raise ValueError(f"{weights_path} does not match the checksum it was saved with: the weights were changed "
                         "or damaged after saving")
    load = (lambda: tensors) if tensors is not None else (lambda: load_file(str(weights_path)))  # older adapters
    return GateCheckpoint(source, config, meta, shapes, load, legacy_runtime)


def tensors_digest(tensors: dict[str, Tensor]) -> str:
    """sha256 over names, dtypes, shapes and bytes of the tensors, in name order."""
    digest = hashlib.sha256()
    for name in sorted(tensors):
        t = tensors[name].detach().cpu().contiguous()
        digest.update(f"{name}|{t.dtype}|{tuple(t.shape)}|".encode())
        digest.update(t.reshape(-1).view(torch.uint8).numpy().tobytes())
    return digest.hexdigest()
