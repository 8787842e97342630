"""The ``seerflex`` attention implementation, registered through transformers' public interfaces.

``AttentionInterface`` gets the attention function and ``AttentionMaskInterface`` the SDPA mask
builder (bool masks, ``None`` for plain causal), so the model classes are used as they are: the
wrapper only switches ``attn_implementation`` to ``"seerflex"``. Per call, the function decides:

* sparse: the layer has an active gate and ``SeerFlexAttention.runs_sparse`` says so (a whole
  prefill of at least ``dense_below`` tokens, on a layer the runtime lets run sparse, inside any
  sliding window, with a mask that is plain causal plus key padding). Gate -> policy -> BlockMask
  -> flex_attention.
* dense otherwise (decode steps, chunked prefill, sliding-window layers, packed or custom masks,
  disabled adapters, modules without gates): SDPA with transformers' own mask, or eager math for
  soft-capped layers (SDPA cannot soft-cap). Gemma-2's logit soft-capping on the sparse path is a
  flex ``score_mod``.
"""

from __future__ import annotations

import weakref
from dataclasses import dataclass
from functools import cache
from typing import Any, Callable

import torch
from torch import Tensor, nn
from transformers import AttentionInterface, AttentionMaskInterface
from transformers.integrations.sdpa_attention import sdpa_attention_forward
from transformers.masking_utils import sdpa_mask

from seerflex.attention import SeerFlexAttention
from seerflex.hf.capture import QKCapture

NAME = "seerflex"
STATE_ATTR = "seerflex_state"


def register() -> None:
    """Register the ``seerflex`` attention and mask functions with transformers (idempotent)."""
    AttentionInterface.register(NAME, seerflex_attention)
    AttentionMaskInterface.register(NAME, sdpa_mask)


@dataclass(eq=False)
class AdapterRouting:
    """Shared by the gated modules of one wrapped model: which adapter runs, and the mask check's cache."""

    adapter: str | None = None  # None: every layer dense
    _mask_ref: weakref.ref | None = None
    _mask_result: tuple[bool, Tensor | None] = (True, None)

    def key_padding(self, mask: Tensor | None, seq_len: int) -> tuple[bool, Tensor | None]:
        """(usable, [B, S] bool, True = real key) from the 4D prefill mask transformers built.

        ``usable`` is False when the mask is more than causal + key padding (packed sequences,
        bidirectional spans): such calls run dense. All layers share one mask object per forward,
        so the check runs once; only a weak reference to the mask is kept.
        """
        if mask is None:
            return True, None
        if self._mask_ref is not None and self._mask_ref() is mask:
            return self._mask_result
        allowed = mask if mask.dtype == torch.bool else mask == 0
        result: tuple[bool, Tensor | None] = (False, None)
        if allowed.dim() == 4 and allowed.shape[1] == 1 and tuple(allowed.shape[-2:]) == (seq_len, seq_len):
            allowed = allowed[:, 0]
            padding = allowed[:, -1]  # the last query row sees every real key (left or right padding)
            causal = torch.ones(seq_len, seq_len, dtype=torch.bool, device=mask.device).tril()
            matches = (allowed == (causal & padding[:, None, :])) | ~padding[:, :, None]  # real query rows only
            if bool(matches.all()):
                result = (True, padding)
        self._mask_ref, self._mask_result = weakref.ref(mask), result
        return result


@dataclass(eq=False)
class LayerState:
    """Attached to each gated HF attention module: its gates (one per adapter) and Q/K capture."""

    layer_idx: int
    adapters: nn.ModuleDict  # adapter name -> SeerFlexAttention, registered on the attention module
    capture: QKCapture
    routing: AdapterRouting

    def active(self) -> SeerFlexAttention | None:
        name = self.routing.adapter
        return self.adapters[name] if name is not None and name in self.adapters else None


def seerflex_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                       dropout: float = 0.0, scaling: float | None = None, sliding_window: int | None = None,
                       softcap: float | None = None, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
    """transformers attention function: q [B,Hq,S,D], k/v [B,Hkv,Skv,D] -> ([B, S, Hq, D], weights)."""
    state: LayerState | None = getattr(module, STATE_ATTR, None)
    layer = state.active() if state is not None else None
    q_len, kv_len = query.shape[2], key.shape[2]
    usable, padding = (state.routing.key_padding(attention_mask, q_len) if layer is not None and q_len == kv_len
                       else (False, None))
    if layer is None or not layer.runs_sparse(q_len, kv_len, sliding_window=sliding_window, mask_supported=usable):
        if state is not None:
            state.capture.clear()
        return dense_attention(module, query, key, value, attention_mask, dropout=dropout, scaling=scaling,
                               sliding_window=sliding_window, softcap=softcap, **kwargs)
    gate_q, gate_k = state.capture.take(query, key)
    if torch.is_autocast_enabled(query.device.type):  # as SDPA under autocast: RoPE left Q/K in float32, V not
        dtype = torch.get_autocast_dtype(query.device.type)
        query, key, value = query.to(dtype), key.to(dtype), value.to(dtype)
    score_mod = None if softcap is None else softcap_score_mod(float(softcap), query.device)
    out = layer(query, key, value, gate_q=gate_q, gate_k=gate_k, attention_mask=padding, scale=scaling,
                score_mod=score_mod)
    return out.transpose(1, 2).contiguous(), None


def dense_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor, attention_mask: Tensor | None,
                    *, softcap: float | None = None, **kwargs: Any) -> tuple[Tensor, Tensor | None]:
    """Exact dense attention with transformers' mask: SDPA, or eager math when logits are soft-capped."""
    if softcap is not None:
        return eager_softcap_attention(module, query, key, value, attention_mask, softcap=softcap, **kwargs)
    return sdpa_attention_forward(module, query, key, value, attention_mask, **kwargs)


def eager_softcap_attention(module: nn.Module, query: Tensor, key: Tensor, value: Tensor,
                            attention_mask: Tensor | None, *, scaling: float | None, softcap: float,
                            dropout: float = 0.0, **_: Any) -> tuple[Tensor, Tensor]:
    """Gemma-2's eager attention (same operations in the same order), fed the bool SDPA mask."""
    groups = query.shape[1] // key.shape[1]
    key, value = key.repeat_interleave(groups, 1), value.repeat_interleave(groups, 1)
    scale = query.shape[-1] ** -0.5 if scaling is None else scaling
    weights = torch.matmul(query, key.transpose(2, 3)) * scale
    weights = torch.tanh(weights / softcap) * softcap
    weights = weights + additive_mask(attention_mask, query.shape[2], key.shape[2], query.dtype, query.device)
    weights = nn.functional.softmax(weights, dim=-1, dtype=torch.float32).to(query.dtype)
    weights = nn.functional.dropout(weights, p=dropout, training=module.training)
    return torch.matmul(weights, value).transpose(1, 2).contiguous(), weights


def additive_mask(mask: Tensor | None, q_len: int, kv_len: int, dtype: torch.dtype, device: torch.device) -> Tensor:
    """0 / dtype-min mask; ``None`` means causal with the queries at the end of the keys."""
    if mask is None:
        rows = torch.arange(kv_len - q_len, kv_len, device=device)[:, None]
        mask = torch.arange(kv_len, device=device)[None, :] <= rows
    if mask.dtype != torch.bool:
        return mask
    return torch.where(mask, torch.zeros((), dtype=dtype, device=device), torch.finfo(dtype).min)


@cache
def softcap_score_mod(softcap: float, device: torch.device) -> Callable[..., Tensor]:
    """One score_mod per cap and device, so compiled flex sees the same function every call.

    The cap is a captured 0-d tensor, not a Python float: dynamic compilation turns captured floats
    into symbolic scalars that the flex kernel cannot lower ("unbacked_bindings").
    """
    cap = torch.tensor(softcap, dtype=torch.float32, device=device)

    def score_mod(score: Tensor, b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        return torch.tanh(score / cap) * cap

    return score_mod
