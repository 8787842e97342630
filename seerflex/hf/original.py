"""Import published SeerAttention prefill gates (``config.json`` + ``attn_gate_weights.pth``).

Key layout: ``model.layers.{i}.self_attn.attn_gate.mask_linear_k.weight`` [heads, k_pools * D,
hidden] and, when Q is projected, ``...mask_linear_q.weight`` [n_q_heads, q_pools * D, hidden].
The original's gate math is seerflex's: the same poolings concatenated in gate-type order (``max``,
``min``, ``avg``), per-head bias-free maps, RoPE at block starts, logits scaled by hidden^-0.5.
One layout difference: when Q is projected, the original projects K once per *KV* head and repeats
the result to the query heads; seerflex repeats K first and keeps one K map per query head. The two
agree exactly when each query head of a group gets its KV head's map, which is what the import does.

Policies: ``nz_ratio`` becomes ``TopK.original(nz)`` (uniform k, last rows dense unless
``seerattn_last_block_dense`` is false); ``threshold`` becomes ``Threshold(t, sink=0, local=0)``.
seerflex always keeps the diagonal block, the original does not force it.
"""

from __future__ import annotations

import dataclasses
import json
import pickle
import re
from pathlib import Path

import torch
from torch import Tensor

from seerflex.policies import Policy, Threshold, TopK
from seerflex.config import SeerFlexConfig
from seerflex.hf.adapter_io import GateCheckpoint, gate_key

ORIGINAL_CONFIG = "config.json"
ORIGINAL_WEIGHTS = "attn_gate_weights.pth"
ORIGINAL_KEY = re.compile(r"^model\.layers\.(\d+)\.self_attn\.attn_gate\.mask_linear_([qk])\.weight$")
REQUIRED = ("seerattn_gate_type", "seerattn_gate_block_size", "seerattn_gate_hidden_size", "num_hidden_layers",
            "num_attention_heads", "hidden_size")


def original_policy(cfg: dict) -> Policy:
    """The policy the original config selects (``seerattn_sparsity_method``)."""
    method = cfg.get("seerattn_sparsity_method", "threshold")
    if method == "nz_ratio":
        policy = TopK.original(float(cfg.get("seerattn_nz_ratio", 1.0)))
        return policy if cfg.get("seerattn_last_block_dense", True) else dataclasses.replace(policy, dense_last_rows=0)
    if method == "threshold":
        return Threshold(threshold=float(cfg.get("seerattn_threshold", 0.0)), sink=0, local=0, dense_last_rows=0)
    raise ValueError(f"unknown seerattn_sparsity_method {method!r}; expected 'threshold' or 'nz_ratio'")


def read_original(source: str, config_path: Path, weights_path: Path) -> GateCheckpoint:
    """Map original gates onto seerflex keys and shapes; checks that they are self-consistent."""
    cfg = json.loads(Path(config_path).read_text())
    missing = [k for k in REQUIRED if k not in cfg]
    if missing:
        raise ValueError(f"{source}: config.json is not a SeerAttention gate config (lacks {missing})")
    n_heads = cfg["num_attention_heads"]
    n_kv = cfg.get("num_key_value_heads") or n_heads
    head_dim = cfg.get("head_dim") or cfg["hidden_size"] // n_heads
    config = SeerFlexConfig(gate_type=cfg["seerattn_gate_type"], block_size=cfg["seerattn_gate_block_size"],
                            gate_hidden_size=cfg["seerattn_gate_hidden_size"], policy=original_policy(cfg))
    try:
        state = torch.load(weights_path, map_location="cpu", weights_only=True)
    except pickle.UnpicklingError as err:
        raise ValueError(f"{source}: {ORIGINAL_WEIGHTS} holds more than tensors; refusing to unpickle it "
                         f"(weights_only=True): {str(err).splitlines()[0]}") from None
    if not isinstance(state, dict):
        raise ValueError(f"{source}: {ORIGINAL_WEIGHTS} should hold a dict of tensors, got {type(state).__name__}")
    layers: dict[int, dict[str, Tensor]] = {}
    unexpected = []
    for key, value in state.items():
        match = ORIGINAL_KEY.match(str(key))
        if match is None or not isinstance(value, Tensor):
            unexpected.append(str(key))
        else:
            layers.setdefault(int(match[1]), {})[match[2]] = value
    if unexpected or not layers:
        raise ValueError(f"{source}: {ORIGINAL_WEIGHTS} does not hold prefill gates in the original key layout "
                         f"(model.layers.{{i}}.self_attn.attn_gate.mask_linear_{{q,k}}.weight); "
                         f"unexpected keys: {unexpected[:4]}")
    project_q = any("q" in ws for ws in layers.values())
    tensors: dict[str, Tensor] = {}
    for i, ws in sorted(layers.items()):
        if "k" not in ws or ("q" in ws) != project_q:
            raise ValueError(f"{source}: layer {i} has gate weights {sorted(ws)}, expected "
                             f"{['k', 'q'] if project_q else ['k']} like the other layers")
        k = ws["k"]
        if k.dim() == 3 and k.shape[0] == n_kv != n_heads:  # projected per KV head: repeat the map per group
            k = k.repeat_interleave(n_heads // n_kv, dim=0)
        tensors[gate_key(i, "k_weight")] = k
        if project_q:
            tensors[gate_key(i, "q_weight")] = ws["q"]
    meta = {"num_hidden_layers": cfg["num_hidden_layers"], "num_attention_heads": n_heads, "num_key_value_heads": n_kv,
            "head_dim": head_dim, "gated_layers": sorted(layers), "project_q": project_q,
            "model_type": cfg.get("model_type"), "base_model_name_or_path": cfg.get("base_model"), "revision": None}
    checkpoint = GateCheckpoint(source, config, meta, {k: tuple(v.shape) for k, v in tensors.items()},
                                lambda: tensors)
    problems = checkpoint.shape_problems()
    if problems:
        raise ValueError(f"{source}: gate weights do not match their config.json:\n  - " + "\n  - ".join(problems))
    return checkpoint
