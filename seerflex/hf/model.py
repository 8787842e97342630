"""SeerFlexModel: a transformers causal LM with seerflex gates, handled the way PEFT handles adapters.

PEFT cannot host the gates itself: its adapter types are a closed enum (``PeftType``), so
``PeftModel.from_pretrained`` rejects unknown ``peft_type`` values. SeerFlexModel therefore mirrors
PEFT's names and conventions instead: ``get_seerflex_model`` / ``from_pretrained`` /
``load_adapter`` / ``set_adapter`` / ``disable_adapter`` / ``unload`` /
``print_trainable_parameters``, ``adapter_config.json`` + ``adapter_model.safetensors``, the
``default`` adapter in the folder root and other adapters in sub-folders named after them. It also
wraps a ``PeftModel`` (e.g. LoRA), so both kinds of adapter can be used together.
"""

from __future__ import annotations

import dataclasses
import os
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Iterable, Iterator

import torch
from torch import Tensor, nn

from seerflex.attention import SeerFlexAttention
from seerflex.block_masks import Policy, SparsityStats
from seerflex.config import SeerFlexConfig
from seerflex.gates import AttnGate
from seerflex.hf.adapter_io import GateCheckpoint, gate_key, load_checkpoint, write_adapter
from seerflex.hf.attention_interface import NAME, STATE_ATTR, LayerState, Runtime, register
from seerflex.hf.capture import QKCapture
from seerflex.hf.families import hf_model_of, inspect_model

GATES_ATTR = "seerflex"  # name of the ModuleDict (adapter name -> SeerFlexAttention) on each attention module


class SeerFlexModel(nn.Module):
    """Base model + named gate sets; sparse prefill with the active one, dense decode.

    Build with :func:`get_seerflex_model` (fresh, trainable gates) or :meth:`from_pretrained`. The
    base model's weights are frozen and never changed; :meth:`unload` gives it back as it was.
    """

    def __init__(self, model: nn.Module, config: SeerFlexConfig | None = None, adapter_name: str = "default", *,
                 revision: str | None = None) -> None:
        super().__init__()
        spec = inspect_model(model)
        hf_model = hf_model_of(model)
        if any(hasattr(layer.module, STATE_ATTR) for layer in spec.layers):
            raise ValueError("this model already carries seerflex gates; add more with load_adapter/add_adapter "
                             "on its SeerFlexModel")
        self.base_model = model
        self.spec = spec
        self.peft_config: dict[str, SeerFlexConfig] = {}
        self._adapter_meta: dict[str, dict[str, Any]] = {}
        self._base_info = {"base_model_name_or_path": hf_model.config._name_or_path or None,
                           "revision": revision or getattr(hf_model.config, "_commit_hash", None)}
        self._runtime = Runtime()
        self._active: str | None = None
        self._disabled = False
        hf_config = hf_model.config  # restored on disable_adapter/unload, sub-configs included
        self._original_attn = {"": hf_config._attn_implementation} | {
            key: getattr(hf_config, key)._attn_implementation for key in hf_config.sub_configs
            if getattr(hf_config, key, None) is not None}
        self._requires_grad = {name: p.requires_grad for name, p in hf_model.named_parameters()}
        hf_model.requires_grad_(False)
        register()
        self._states: list[LayerState] = []
        for layer in spec.layers:
            if layer.gated:
                gates = nn.ModuleDict()
                layer.module.add_module(GATES_ATTR, gates)
                state = LayerState(layer.layer_idx, gates, QKCapture(layer.module, spec.family), self._runtime)
                setattr(layer.module, STATE_ATTR, state)
                self._states.append(state)
        hf_model.set_attn_implementation(NAME)
        if config is not None:
            self.add_adapter(adapter_name, config)

    # ------------------------------------------------------------------ PEFT-style construction and IO
    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike, adapter_name: str = "default", *,
                        is_trainable: bool = False, revision: str | None = None,
                        token: str | bool | None = None) -> "SeerFlexModel":
        """Wrap ``model`` with gates from a folder or hub repo (seerflex adapter or original SeerAttention).

        Every shape and layer count is checked before the model is changed in any way.
        """
        checkpoint = load_checkpoint(model_id, revision=revision, token=token)
        checkpoint.check_fits(inspect_model(model))
        wrapped = cls(model, revision=checkpoint.meta.get("revision"))
        wrapped._add_checkpoint(adapter_name, checkpoint, is_trainable)
        return wrapped

    def load_adapter(self, model_id: str | os.PathLike, adapter_name: str, *, is_trainable: bool = False,
                     revision: str | None = None, token: str | bool | None = None) -> None:
        """Load another named gate set (checked before anything is touched); activate it with set_adapter."""
        self._check_new_name(adapter_name)
        checkpoint = load_checkpoint(model_id, revision=revision, token=token)
        checkpoint.check_fits(self.spec)
        self._add_checkpoint(adapter_name, checkpoint, is_trainable)

    def add_adapter(self, adapter_name: str, config: SeerFlexConfig) -> None:
        """Fresh, trainable gates (N(0, 0.02)) for every gateable layer under a new name."""
        self._add(adapter_name, config, self.spec.gated_layers, project_q=None, trainable=True,
                  meta={**self._base_info})

    def save_pretrained(self, save_directory: str | os.PathLike,
                        selected_adapters: Iterable[str] | None = None) -> None:
        """Write each adapter's ``adapter_config.json`` + ``adapter_model.safetensors`` (gate weights only).

        ``default`` goes to ``save_directory``, any other adapter to ``save_directory/<name>``.
        """
        names = list(self.peft_config) if selected_adapters is None else list(selected_adapters)
        for name in names:
            self._require(name)
            out = Path(save_directory) if name == "default" else Path(save_directory) / name
            meta = {**self.spec.geometry(), **self._adapter_meta[name]}
            write_adapter(out, self.peft_config[name], meta, self._gate_tensors(name))

    def push_to_hub(self, repo_id: str, *, private: bool | None = None, token: str | bool | None = None,
                    commit_message: str = "Upload seerflex gates", selected_adapters: Iterable[str] | None = None
                    ) -> Any:
        """save_pretrained into a temporary folder and upload it as one commit (needs network access)."""
        from huggingface_hub import HfApi

        api = HfApi(token=token)
        api.create_repo(repo_id, private=private, exist_ok=True)
        with tempfile.TemporaryDirectory() as tmp:
            self.save_pretrained(tmp, selected_adapters)
            return api.upload_folder(repo_id=repo_id, folder_path=tmp, commit_message=commit_message)

    # ------------------------------------------------------------------ adapters and policies
    @property
    def active_adapter(self) -> str | None:
        return self._active

    def set_adapter(self, adapter_name: str) -> None:
        """Make ``adapter_name`` the gate set used for sparse prefill."""
        self._require(adapter_name)
        self._activate(adapter_name)

    def delete_adapter(self, adapter_name: str) -> None:
        self._require(adapter_name)
        for state in self._states:
            if adapter_name in state.adapters:
                del state.adapters[adapter_name]
        del self.peft_config[adapter_name], self._adapter_meta[adapter_name]
        if self._active == adapter_name:
            self._activate(next(iter(self.peft_config), None))

    def set_policy(self, policy: Policy, *, layers: Iterable[int] | None = None,
                   adapter_name: str | None = None) -> None:
        """Swap the block policy (all gated layers, or ``layers``) of an adapter, active one by default.

        Policies are plain data read at every prefill: nothing reloads or recompiles. Saving afterwards
        stores the new policy as the adapter's default (or as per-layer overrides).
        """
        if not isinstance(policy, Policy):
            raise TypeError(f"policy must be a seerflex Policy (TopK, Threshold, TopP), got {type(policy).__name__}")
        name = self._active if adapter_name is None else adapter_name
        self._require(name)
        gated = self._adapter_meta[name]["gated_layers"]
        targets = gated if layers is None else sorted(set(layers))
        unknown = sorted(set(targets) - set(gated))
        if unknown:
            raise ValueError(f"adapter '{name}' has no gates on layers {unknown} (gated layers: {gated})")
        for state in self._states:
            if state.layer_idx in targets:
                state.adapters[name].policy = policy
        config = self.peft_config[name]
        if layers is None:
            config.policy, config.layer_policies = policy, {}
        else:
            config.layer_policies.update({i: policy for i in targets})

    @contextmanager
    def disable_adapter(self) -> Iterator[None]:
        """Run the plain base model inside the block: its own attention implementation, no capture."""
        hf_model = hf_model_of(self.base_model)
        self._set_disabled(True)
        hf_model.set_attn_implementation(self._original_attn)
        try:
            yield
        finally:
            hf_model.set_attn_implementation(NAME)
            self._set_disabled(False)

    def unload(self) -> nn.Module:
        """Remove every gate, hook and setting seerflex added and return the base model as it was."""
        hf_model = hf_model_of(self.base_model)
        for layer in self.spec.layers:
            state = getattr(layer.module, STATE_ATTR, None)
            if state is not None:
                state.capture.remove()
                delattr(layer.module, STATE_ATTR)
                delattr(layer.module, GATES_ATTR)
        self._states.clear()
        self.peft_config.clear()
        self._adapter_meta.clear()
        self._activate(None)
        hf_model.set_attn_implementation(self._original_attn)
        for name, p in hf_model.named_parameters():
            p.requires_grad_(self._requires_grad[name])
        return self.base_model

    def get_base_model(self) -> nn.Module:
        return self.base_model

    @contextmanager
    def track_sparsity(self) -> Iterator[list[tuple[int, SparsityStats]]]:
        """Collect (layer index, SparsityStats) for every sparse prefill call inside the block."""
        stats: list[tuple[int, SparsityStats]] = []
        self._runtime.stats = stats
        try:
            yield stats
        finally:
            self._runtime.stats = None

    def get_nb_trainable_parameters(self) -> tuple[int, int]:
        """(trainable, all) parameter counts, gates included."""
        params = list(self.base_model.parameters())
        return sum(p.numel() for p in params if p.requires_grad), sum(p.numel() for p in params)

    def print_trainable_parameters(self) -> None:
        trainable, total = self.get_nb_trainable_parameters()
        print(f"trainable params: {trainable:,d} || all params: {total:,d} || "
              f"trainable%: {100 * trainable / max(total, 1):.4f}")

    # ------------------------------------------------------------------ running
    def forward(self, *args: Any, **kwargs: Any) -> Any:
        return self.base_model(*args, **kwargs)

    def generate(self, *args: Any, **kwargs: Any) -> Any:
        """The base model's generate: sparse prefill with the active gates, dense decode over the cache."""
        return self.base_model.generate(*args, **kwargs)

    def __getattr__(self, name: str) -> Any:
        try:
            return super().__getattr__(name)
        except AttributeError:
            if name == "base_model":
                raise
            return getattr(self.base_model, name)

    # ------------------------------------------------------------------ internals
    def _add_checkpoint(self, name: str, checkpoint: GateCheckpoint, trainable: bool) -> None:
        meta = checkpoint.meta
        self._add(name, checkpoint.config, meta["gated_layers"], project_q=meta["project_q"], trainable=trainable,
                  meta={"base_model_name_or_path": meta.get("base_model_name_or_path"),
                        "revision": meta.get("revision")})
        tensors = checkpoint.load()
        with torch.no_grad():
            for state in self._states:
                if name in state.adapters:
                    for param_name, param in state.adapters[name].gate.named_parameters():
                        param.copy_(tensors[gate_key(state.layer_idx, param_name)])

    def _add(self, name: str, config: SeerFlexConfig, gated_layers: list[int], *, project_q: bool | None,
             trainable: bool, meta: dict[str, Any]) -> None:
        self._check_new_name(name)
        config = dataclasses.replace(config)  # the adapter's own copy: set_policy edits it
        spec = self.spec
        built_project_q = None
        for state in self._states:
            if state.layer_idx not in gated_layers:
                continue
            layer = SeerFlexAttention(config, spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim,
                                      rope=spec.rope, layer_idx=state.layer_idx)
            if project_q is not None and (layer.gate.q_weight is not None) != project_q:
                layer.gate = AttnGate(config.gate_type, spec.num_attention_heads, spec.num_key_value_heads,
                                      spec.head_dim, block_size=config.block_size, hidden_size=config.gate_hidden_size,
                                      rope=spec.rope, project_q=project_q)
            device = next(spec.layers[state.layer_idx].module.parameters()).device
            layer.to(device=device, dtype=torch.float32).requires_grad_(trainable)
            state.adapters[name] = layer
            built_project_q = layer.gate.q_weight is not None
        self.peft_config[name] = config
        self._adapter_meta[name] = {**meta, "gated_layers": sorted(gated_layers), "project_q": bool(built_project_q),
                                    "model_type": spec.model_type}
        if self._active is None:
            self._activate(name)

    def _activate(self, name: str | None) -> None:
        self._active = name
        self._runtime.adapter = None if self._disabled else name

    def _set_disabled(self, disabled: bool) -> None:
        self._disabled = disabled
        self._activate(self._active)
        for state in self._states:
            state.capture.active = not disabled

    def _gate_tensors(self, name: str) -> dict[str, Tensor]:
        return {gate_key(state.layer_idx, param_name): param
                for state in self._states if name in state.adapters
                for param_name, param in state.adapters[name].gate.named_parameters()}

    def _require(self, name: str | None) -> None:
        if name not in self.peft_config:
            raise ValueError(f"no adapter named {name!r}; adapters: {sorted(self.peft_config)}")

    def _check_new_name(self, name: str) -> None:
        if name in self.peft_config:
            raise ValueError(f"adapter {name!r} already exists; delete_adapter it first or pick another name")


def get_seerflex_model(model: nn.Module, config: SeerFlexConfig, adapter_name: str = "default", *,
                       revision: str | None = None) -> SeerFlexModel:
    """Wrap a transformers causal LM (or a PeftModel) with fresh, trainable gates: PEFT's get_peft_model.

    ``revision``: the base model's hub revision, recorded in saved adapter configs.
    """
    return SeerFlexModel(model, config, adapter_name, revision=revision)
