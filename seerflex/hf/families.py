"""What seerflex needs from each supported architecture, found and checked before anything is changed.

A family entry says where an attention module produces its pre-RoPE Q and K (the projections, or the
q/k norms that follow them in Qwen3 and Gemma-3) and how those tensors are laid out. Layers whose
``layer_types`` entry is ``sliding_attention`` (Gemma-2/3, Qwen with sliding layers) get no gate and
keep their exact dense window; every other layer gets one.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from torch import nn
from transformers import PreTrainedModel

from seerflex.gates import RopeSpec

@dataclass(frozen=True)
class Family:
    """Capture points for pre-RoPE Q/K: ``q_module``/``k_module`` are attribute names on the attention
    module; ``qk_layout`` is their output layout: ``flat`` [B, S, H*D], ``bshd`` or ``bhsd``."""

    attention_classes: tuple[str, ...]
    q_module: str
    k_module: str
    qk_layout: str


_PROJ = dict(q_module="q_proj", k_module="k_proj", qk_layout="flat")
FAMILIES: dict[str, Family] = {
    "llama": Family(("LlamaAttention",), **_PROJ),
    "mistral": Family(("MistralAttention",), **_PROJ),
    "qwen2": Family(("Qwen2Attention",), **_PROJ),
    "qwen3": Family(("Qwen3Attention",), q_module="q_norm", k_module="k_norm", qk_layout="bshd"),
    "gemma2": Family(("Gemma2Attention",), **_PROJ),
    "gemma3_text": Family(("Gemma3Attention",), q_module="q_norm", k_module="k_norm", qk_layout="bhsd"),
}
_MODULE_ATTRS = ("layer_idx", "head_dim", "scaling")


@dataclass(frozen=True)
class AttentionLayer:
    """One attention module of the base model: its index, dotted path, and whether it gets a gate."""

    layer_idx: int
    path: str
    module: nn.Module
    gated: bool


@dataclass(frozen=True)
class ModelSpec:
    """Everything seerflex reads from a base model: family, head geometry, rope and the layers."""

    model_type: str
    family: Family
    num_hidden_layers: int
    num_attention_heads: int
    num_key_value_heads: int
    head_dim: int
    rope: RopeSpec
    layers: tuple[AttentionLayer, ...]

    @property
    def gated_layers(self) -> list[int]:
        return [layer.layer_idx for layer in self.layers if layer.gated]

    def geometry(self) -> dict[str, Any]:
        """The fields an adapter must match (written to and checked against adapter_config.json)."""
        return {"model_type": self.model_type, "num_hidden_layers": self.num_hidden_layers,
                "num_attention_heads": self.num_attention_heads, "num_key_value_heads": self.num_key_value_heads,
                "head_dim": self.head_dim}


def hf_model_of(model: nn.Module) -> PreTrainedModel:
    """The transformers model inside ``model`` (itself, or the base model of a PEFT ``PeftModel``)."""
    inner = model.get_base_model() if hasattr(model, "get_base_model") else model
    if not isinstance(inner, PreTrainedModel):
        raise TypeError(f"seerflex wraps transformers models (PreTrainedModel, or a PeftModel around one), "
                        f"got {type(model).__name__}")
    return inner


def inspect_model(model: nn.Module) -> ModelSpec:
    """Find the family, geometry and attention layers of ``model``; raise if it cannot host gates."""
    hf_model = hf_model_of(model)
    config = hf_model.config.get_text_config()
    model_type = getattr(config, "model_type", "")
    family = FAMILIES.get(model_type)
    if family is None:
        raise ValueError(_unsupported_message(hf_model, model_type))
    if not hf_model._can_set_attn_implementation():
        raise ValueError(f"{type(hf_model).__name__} does not dispatch attention through transformers' "
                         "AttentionInterface, which seerflex plugs into")
    try:
        rope = RopeSpec.from_hf_config(config)
    except ValueError as err:
        raise ValueError(f"{type(hf_model).__name__} ({model_type}): {err}") from None
    layer_types = getattr(config, "layer_types", None)
    layers: list[AttentionLayer] = []
    for path, module in hf_model.named_modules():
        if type(module).__name__ not in family.attention_classes:
            continue
        missing = [a for a in (family.q_module, family.k_module, *_MODULE_ATTRS) if not hasattr(module, a)]
        if missing:
            raise ValueError(f"{type(module).__name__} at '{path}' lacks {missing}, which seerflex needs for the "
                             f"'{model_type}' family (pre-RoPE Q/K capture points and head geometry)")
        idx = module.layer_idx
        sliding = layer_types is not None and layer_types[idx] == "sliding_attention"
        layers.append(AttentionLayer(idx, path, module, gated=not sliding))
    n_layers = config.num_hidden_layers
    if sorted(layer.layer_idx for layer in layers) != list(range(n_layers)):
        raise ValueError(f"found attention modules for layers {sorted(layer.layer_idx for layer in layers)} in "
                         f"{type(hf_model).__name__}, expected one per layer 0..{n_layers - 1} "
                         f"(classes {family.attention_classes})")
    head_dims = {layer.module.head_dim for layer in layers}
    if len(head_dims) != 1:
        raise ValueError(f"attention layers of {type(hf_model).__name__} have different head sizes {sorted(head_dims)}")
    return ModelSpec(model_type, family, n_layers, config.num_attention_heads, config.num_key_value_heads,
                     head_dims.pop(), rope, tuple(sorted(layers, key=lambda layer: layer.layer_idx)))


def _unsupported_message(model: PreTrainedModel, model_type: str) -> str:
    """Name what the architecture lacks, so users know whether a family entry could be added."""
    config = model.config.get_text_config()
    lacks = []
    if not any(hasattr(m, "q_proj") and hasattr(m, "k_proj") for m in model.modules()):
        lacks.append("attention modules with separate q_proj/k_proj (where pre-RoPE Q/K can be captured)")
    has_rope = any(getattr(config, a, None) is not None for a in ("rope_parameters", "rope_scaling", "rope_theta"))
    if not has_rope:
        lacks.append("rotary position embeddings (no rope_parameters/rope_theta in the config)")
    if not model._can_set_attn_implementation():
        lacks.append("attention dispatched through transformers' AttentionInterface")
    lacks.append(f"a seerflex family entry for model_type '{model_type}' (seerflex.hf.families.FAMILIES)")
    return (f"{type(model).__name__} (model_type '{model_type}') is not supported by seerflex; it lacks: "
            + "; ".join(lacks) + f". Supported model types: {', '.join(sorted(FAMILIES))}")
