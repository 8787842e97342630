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
import warnings
import tempfile
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Iterable, Iterator

import torch
from torch import Tensor, nn

from seerflex.attention import SeerFlexAttention
from seerflex.config import SeerFlexConfig
from seerflex.hf.adapter_io import GateCheckpoint, gate_key, write_adapter
from seerflex.hf.attention_interface import NAME, STATE_ATTR, AdapterRouting, LayerState, register
from seerflex.hf.capture import QKCapture
from seerflex.hf.families import hf_model_of, inspect_model
from seerflex.hf.loading import load_checkpoint
from seerflex.policies import PolicyLike, SparsityStats, as_policy
from seerflex.runtime import Runtime, RuntimeOptions
from seerflex.scorer import BlockScorer
from seerflex.scorers import make_scorer

GATES_ATTR = "seerflex"  # name of the ModuleDict (adapter name -> SeerFlexAttention) on each attention module


class SeerFlexModel(nn.Module):
    """Base model + named gate sets; sparse prefill with the active one, dense decode.

    Build with :func:`get_seerflex_model` (fresh, trainable gates) or :meth:`from_pretrained`. The
    base model's weights are frozen and never changed; :meth:`unload` gives it back as it was.

    It is the one owner of what its layers read at every call: each adapter's policies
    (``set_policy``), and one ``seerflex.runtime.Runtime`` for all of them: runtime options
    (``set_runtime``), the scorer (``set_scorer``) and the layers that run sparse
    (``set_sparse_layers``); ``overrides`` changes any of them for the length of a ``with`` block.
    """

    def __init__(self, model: nn.Module, config: SeerFlexConfig | None = None, adapter_name: str = "default", *,
                 revision: str | None = None, runtime: RuntimeOptions | None = None) -> None:
        super().__init__()
        spec = inspect_model(model)
        hf_model = hf_model_of(model)
        if not spec.gated_layers:
            warnings.warn(f"every attention layer of this {spec.model_type} model uses a sliding window, so no layer "
                          "gets a gate and seerflex changes nothing (only full-attention layers run block-sparse)",
                          stacklevel=2)
        if any(hasattr(layer.module, STATE_ATTR) for layer in spec.layers):
            raise ValueError("this model already carries seerflex gates; add more with load_adapter/add_adapter "
                             "on its SeerFlexModel")
        self.base_model = model
        self.spec = spec
        self.peft_config: dict[str, SeerFlexConfig] = {}
        self._adapter_meta: dict[str, dict[str, Any]] = {}
        self._base_info = {"base_model_name_or_path": hf_model.config._name_or_path or None,
                           "revision": revision or getattr(hf_model.config, "_commit_hash", None)}
        self._runtime = Runtime(RuntimeOptions() if runtime is None else runtime)
        self._routing = AdapterRouting()
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
                state = LayerState(layer.layer_idx, gates, QKCapture(layer.module, spec.family), self._routing)
                setattr(layer.module, STATE_ATTR, state)
                self._states.append(state)
        hf_model.set_attn_implementation(NAME)
        if config is not None:
            self.add_adapter(adapter_name, config)

    # ------------------------------------------------------------------ PEFT-style construction and IO
    @classmethod
    def from_pretrained(cls, model: nn.Module, model_id: str | os.PathLike, adapter_name: str = "default", *,
                        is_trainable: bool = False, revision: str | None = None, token: str | bool | None = None,
                        runtime: RuntimeOptions | None = None,
                        block_shape: tuple[int, int] | None = None) -> "SeerFlexModel":
        """Wrap ``model`` with gates from a folder or hub repo (seerflex adapter or original SeerAttention).

        Every shape and layer count is checked before the model is changed in any way. ``runtime``:
        how the layers run (default: ``RuntimeOptions()``, or the options an older adapter stored).
        ``block_shape`` (query block, key block) runs the gates on other blocks than they were trained
        on (their weights do not depend on it), e.g. 64 x 64 gates as 128 x 64; measure before trusting it
        (gates distilled with ``kl_blocks=free`` then ask for always-on blocks covering the same tokens).
        """
        checkpoint = load_checkpoint(model_id, revision=revision, token=token)
        if block_shape is not None:
            config = checkpoint.config
            checkpoint.config = SeerFlexConfig.from_dict(config.to_dict() | {
                "q_block_size": block_shape[0], "block_size": block_shape[1],
                "free_beyond": free_beyond_at(config, *block_shape)})
        checkpoint.check_fits(inspect_model(model))
        options = RuntimeOptions(**checkpoint.runtime) if runtime is None else runtime
        wrapped = cls(model, revision=checkpoint.meta.get("revision"), runtime=options)
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

    def set_policy(self, policy: PolicyLike, *, layers: Iterable[int] | None = None,
                   adapter_name: str | None = None) -> None:
        """Swap the block policy (all gated layers, or ``layers``) of an adapter, active one by default.

        ``policy``: a Policy, its dict or a spec string (``"topk:0.1"``). Layers read their adapter's
        config at every prefill: nothing reloads or recompiles. Saving afterwards stores the new
        policy as the adapter's default (or as per-layer overrides).
        """
        policy = as_policy(policy)
        layers = None if layers is None else [int(i) for i in layers]
        name = self._active if adapter_name is None else adapter_name
        self._require(name)
        gated = self._adapter_meta[name]["gated_layers"]
        unknown = sorted(set(layers or ()) - set(gated))
        if unknown:
            raise ValueError(f"adapter '{name}' has no gates on layers {unknown} (gated layers: {gated})")
        config = self.peft_config[name]
        if layers is None:
            config.policy, config.layer_policies = policy, {}
        else:
            config.layer_policies.update({i: policy for i in layers})

    def set_scorer(self, scorer: str | BlockScorer | None) -> None:
        """What ranks the blocks: ``None`` / ``"gate"`` = the active adapter's learned gates, a name
        from ``seerflex.scorers.SCORERS`` (``recency``, ``pooled``, ``oracle``, ``xattention``, ...) or any BlockScorer."""
        if scorer is None or scorer == "gate":
            self._runtime.scorer = None
        elif isinstance(scorer, str):
            self._runtime.scorer = make_scorer(scorer)
        elif isinstance(scorer, BlockScorer):
            self._runtime.scorer = scorer
        else:
            raise TypeError(f"a scorer is a name, a BlockScorer or None, got {type(scorer).__name__}")

    def set_sparse_layers(self, layers: Iterable[int] | None) -> None:
        """Run only these layer indices sparse (the other ones dense); ``None`` = every gated layer."""
        if layers is None:
            self._runtime.sparse_layers = None
            return
        chosen = frozenset(int(i) for i in layers)
        unknown = sorted(chosen - set(self.spec.gated_layers))
        if unknown:
            raise ValueError(f"layers {unknown} have no gates (gated layers: {self.spec.gated_layers})")
        self._runtime.sparse_layers = chosen

    def set_runtime(self, **options: Any) -> None:
        """Change runtime options (``compile``, ``backend``, ``dense_below``, ``check_finite``, ``cuda_graphs``)
        for every layer; they are never saved with the adapter."""
        self._runtime.options = self._runtime.options.replace(**options)

    @property
    def gated_layers(self) -> list[int]:
        """Layer indices the active adapter has gates for (none when no adapter is loaded)."""
        return list(self._adapter_meta[self._active]["gated_layers"]) if self._active is not None else []

    @property
    def runtime_options(self) -> RuntimeOptions:
        return self._runtime.options

    @property
    def scorer(self) -> BlockScorer | None:
        return self._runtime.scorer

    @property
    def sparse_layers(self) -> frozenset[int] | None:
        return self._runtime.sparse_layers

    @contextmanager
    def overrides(self, *, policy: PolicyLike | dict[int, PolicyLike] | None = None,
                  scorer: str | BlockScorer | None = None, sparse_layers: Iterable[int] | None = None,
                  **runtime: Any) -> Iterator[None]:
        """Change policy, scorer, sparse layers and runtime options inside the block, then restore them.

        ``policy``: one for every layer, or ``{layer index: policy}`` (then only those layers run
        sparse, unless ``sparse_layers`` says otherwise); None keeps each layer's own.
        ``scorer``: as ``set_scorer`` (None keeps the current one).
        """
        config = self.peft_config[self._active] if self._active is not None else None
        saved = (None if config is None else (config.policy, dict(config.layer_policies)),
                 self._runtime.scorer, self._runtime.sparse_layers, self._runtime.options)
        try:
            if isinstance(policy, dict) and "type" not in policy:
                if not policy:
                    raise ValueError("overrides(policy={}) names no layer; pass None to keep each layer's policy")
                policy = {int(layer): p for layer, p in policy.items()}
                for layer, p in policy.items():
                    self.set_policy(p, layers=[layer])
                if sparse_layers is None:
                    sparse_layers = policy
            elif policy is not None:
                self.set_policy(policy)
            if scorer is not None:
                self.set_scorer(scorer)
            if sparse_layers is not None:
                self.set_sparse_layers(sparse_layers)
            if runtime:
                self.set_runtime(**runtime)
            yield
        finally:
            if config is not None:
                config.policy, config.layer_policies = saved[0]
            self._runtime.scorer, self._runtime.sparse_layers, self._runtime.options = saved[1:]

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

    @contextmanager
    def gate_training(self, loss: Callable[[int | None, Tensor, Any], None]) -> Iterator[None]:
        """Inside the block, every sparse call of a training gate reports (layer, logits with gradient, its
        ``ScorerInputs``) to ``loss`` (``Runtime.gate_loss``; e.g. ``seerflex.finetune.GateLoss``). On CUDA the
        logits and the attention output share one compiled backward: backpropagate one summed loss (or pass
        ``retain_graph=True`` to the first of two ``backward`` calls)."""
        self._runtime.gate_loss = loss
        try:
            yield
        finally:
            self._runtime.gate_loss = None

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
        config = dataclasses.replace(config)  # the adapter's own config: its layers read it, set_policy edits it
        spec = self.spec
        built_project_q = None
        for state in self._states:
            if state.layer_idx not in gated_layers:
                continue
            layer = SeerFlexAttention(config, spec.num_attention_heads, spec.num_key_value_heads, spec.head_dim,
                                      rope=spec.rope, layer_idx=state.layer_idx, runtime=self._runtime,
                                      project_q=project_q)
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
        self._routing.adapter = None if self._disabled else name

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
                       revision: str | None = None, runtime: RuntimeOptions | None = None) -> SeerFlexModel:
    """Wrap a transformers causal LM (or a PeftModel) with fresh, trainable gates: PEFT's get_peft_model.

    ``revision``: the base model's hub revision, recorded in saved adapter configs. ``runtime``:
    how the layers run (``RuntimeOptions``), changeable later with ``set_runtime``.
    """
    return SeerFlexModel(model, config, adapter_name, revision=revision, runtime=runtime)


def free_beyond_at(config: SeerFlexConfig, q_block: int, k_block: int) -> dict[str, int] | None:
    """``config.free_beyond`` at other blocks: sink and local key blocks covering at least the tokens they covered
    (local counts back from the query block's start, so a smaller query block needs up to Q - Q' tokens more)."""
    free, b = config.free_beyond, config.block_size
    if free is None:
        return None
    return {"sink": -(-free["sink"] * b // k_block),
            "local": -(-(free["local"] * b + max(0, config.q_block_size - q_block)) // k_block)}
