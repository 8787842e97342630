"""Context extension of a Hugging Face model by rope scaling (YaRN by default), in place.

The config gets the new rope parameters and ``max_position_embeddings`` x factor; every rotary embedding
module is rebuilt from it, so the model computes exactly what a model built from the new config would
(tested), and seerflex gates built afterwards read the same rope (``RopeSpec.from_hf_config``).
"""

from __future__ import annotations

from typing import Any

from torch import nn

SCALINGS = ("yarn", "linear")


def extend_context(model: nn.Module, factor: float, rope_type: str = "yarn") -> dict[str, Any]:
    """Scale ``model``'s rope by ``factor`` (> 1); returns the new rope parameters."""
    if rope_type not in SCALINGS:
        raise ValueError(f"rope_type must be one of {SCALINGS}, got {rope_type!r}")
    if isinstance(factor, bool) or not isinstance(factor, (int, float)) or not factor > 1:
        raise ValueError(f"the context extension factor must be a number > 1, got {factor!r}")
    config = model.config
    params = getattr(config, "rope_parameters", None)
    if not isinstance(params, dict) or "rope_type" not in params:
        raise ValueError(f"{type(model).__name__} has no single rope_parameters to scale (model_type "
                         f"{getattr(config, 'model_type', '?')}); context extension needs a RoPE model with one rope")
    if params["rope_type"] != "default":
        raise ValueError(f"the model's rope is already scaled ({params['rope_type']}); extend a model with plain rope")
    original = int(config.max_position_embeddings)
    new = {**params, "rope_type": rope_type, "factor": float(factor)}  # keeps e.g. partial_rotary_factor
    if rope_type == "yarn":
        new["original_max_position_embeddings"] = original
    config.rope_parameters = new
    config.max_position_embeddings = int(original * factor)
    rebuilt = 0
    for parent in model.modules():
        for name, child in list(parent.named_children()):
            if type(child).__name__.endswith("RotaryEmbedding"):
                fresh = type(child)(config=config)
                setattr(parent, name, fresh.to(child.inv_freq.device))
                rebuilt += 1
    if not rebuilt:
        raise ValueError(f"found no rotary embedding module in {type(model).__name__} to rebuild")
    return new
