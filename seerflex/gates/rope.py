"""Rotary position embedding for pooled gate Q/K, with the base model's rope settings.

The gate rotates its projected, pooled Q and K at the block *start* positions (0, bs, 2bs, ...),
with head size = gate hidden size, so block scores know relative block distance the way the base
model's attention knows token distance. Frequencies follow the Hugging Face definitions of the
``default``, ``linear``, ``llama3`` and ``yarn`` rope types (checked against transformers in tests);
they are computed here so the gate does not depend on transformers' private helpers.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import Tensor

ROPE_TYPES = ("default", "linear", "llama3", "yarn")


@dataclass(frozen=True)
class RopeSpec:
    """Base model rope settings: ``theta`` plus the HF ``rope_scaling`` fields (minus theta)."""

    theta: float = 10000.0
    scaling: dict[str, Any] = field(default_factory=dict)
    max_position_embeddings: int | None = None

    def __post_init__(self) -> None:
        if self.rope_type not in ROPE_TYPES:
            raise ValueError(f"unsupported rope type {self.rope_type!r}; supported: {ROPE_TYPES}")

    @property
    def rope_type(self) -> str:
        return self.scaling.get("rope_type", self.scaling.get("type", "default"))

    @classmethod
    def from_hf_config(cls, config: Any) -> "RopeSpec":
        """Read rope settings from a transformers config (v5 ``rope_parameters`` or v4 fields)."""
        params = getattr(config, "rope_parameters", None)
        if isinstance(params, dict) and "full_attention" in params:  # per-layer-type (Gemma-3)
            params = params["full_attention"]
        if not isinstance(params, dict):
            params = dict(getattr(config, "rope_scaling", None) or {})
            params.setdefault("rope_theta", getattr(config, "rope_theta", 10000.0))
        scaling = {k: v for k, v in params.items() if k != "rope_theta" and v is not None}
        if scaling.get("rope_type", scaling.get("type")) in (None, "default"):
            scaling = {}
        return cls(float(params.get("rope_theta", 10000.0)), scaling,
                   getattr(config, "max_position_embeddings", None))

    def to_dict(self) -> dict[str, Any]:
        return {"theta": self.theta, "scaling": dict(self.scaling),
                "max_position_embeddings": self.max_position_embeddings}

    def inv_freq(self, dim: int) -> tuple[Tensor, float]:
        """Inverse frequencies [dim // 2] (float64) and the attention scaling applied to cos/sin."""
        base = 1.0 / self.theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
        s, kind = self.scaling, self.rope_type
        if kind == "default":
            return base, 1.0
        factor = float(s["factor"])
        if kind == "linear":
            return base / factor, 1.0
        original = s.get("original_max_position_embeddings") or self.max_position_embeddings
        if kind == "llama3":
            return _llama3(base, factor, s["low_freq_factor"], s["high_freq_factor"], original), 1.0
        return _yarn(dim, self.theta, factor, original, s)

    def cos_sin(self, positions: Tensor, dim: int, dtype: torch.dtype) -> tuple[Tensor, Tensor]:
        """cos and sin [len(positions), dim] in HF's rotate-half layout."""
        inv_freq, attention_scaling = self.inv_freq(dim)
        angles = positions.to(torch.float64)[:, None] * inv_freq.to(positions.device)[None]
        angles = torch.cat([angles, angles], dim=-1)
        return ((angles.cos() * attention_scaling).to(dtype),
                (angles.sin() * attention_scaling).to(dtype))


def apply_rope(x: Tensor, cos: Tensor, sin: Tensor) -> Tensor:
    """Rotate [..., N, dim] by cos/sin [N, dim] (rotate-half convention)."""
    half = x.shape[-1] // 2
    rotated = torch.cat([-x[..., half:], x[..., :half]], dim=-1)
    return x * cos + rotated * sin


def _llama3(inv_freq: Tensor, factor: float, low: float, high: float, original: int) -> Tensor:
    wavelen = 2 * math.pi / inv_freq
    scaled = torch.where(wavelen > original / low, inv_freq / factor, inv_freq)
    smooth = (original / wavelen - low) / (high - low)
    smoothed = (1 - smooth) * scaled / factor + smooth * scaled
    medium = (wavelen >= original / high) & (wavelen <= original / low)
    return torch.where(medium, smoothed, scaled)


def _yarn(dim: int, theta: float, factor: float, original: int, s: dict[str, Any]) -> tuple[Tensor, float]:
    def mscale(scale: float, m: float = 1.0) -> float:
        return 1.0 if scale <= 1 else 0.1 * m * math.log(scale) + 1.0

    attention = s.get("attention_factor")
    if attention is None:
        m, m_all = s.get("mscale"), s.get("mscale_all_dim")
        attention = mscale(factor, m) / mscale(factor, m_all) if m and m_all else mscale(factor)

    def correction_dim(rotations: float) -> float:
        return dim * math.log(original / (rotations * 2 * math.pi)) / (2 * math.log(theta))

    low, high = correction_dim(s.get("beta_fast") or 32), correction_dim(s.get("beta_slow") or 1)
    if s.get("truncate", True):
        low, high = math.floor(low), math.ceil(high)
    low, high = max(low, 0), min(high, dim - 1)
    if low == high:
        high += 0.001
    ramp = ((torch.arange(dim // 2, dtype=torch.float64) - low) / (high - low)).clamp(0, 1)
    pos_freqs = theta ** (torch.arange(0, dim, 2, dtype=torch.float64) / dim)
    extrapolation = 1 - ramp
    inv = (1 / (factor * pos_freqs)) * (1 - extrapolation) + (1 / pos_freqs) * extrapolation
    return inv, float(attention)
