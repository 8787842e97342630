"""Ground truth for gate distillation: the block-pooled attention map of the frozen model.

For every (head, query block i, key block j) of causal attention:

* ``max`` (the original SeerAttention target): the largest softmax probability inside the 64 x 64
  tile, each row i then normalised to sum 1;
* ``mass``: the probability mass a query puts in key block j, averaged over block i's real queries
  (rows sum to 1 by construction) -- what a block-sparse mask actually keeps or loses.

The map is computed in chunks of query blocks against only the keys they can see, so memory is
O(chunk x S), never S x S. Probabilities use the row log-sum-exp, taken from the chunk itself or
passed in (``lse``) when a dense flex pass already produced it. On CUDA the chunk step is compiled,
which fuses the exponent, masking and pooling into the score matmul's epilogue.
"""

from __future__ import annotations

from functools import cache
from typing import Callable, Literal

import torch
from torch import Tensor

MODES = ("max", "mass")
CHUNK_ELEMENTS = 1 << 27  # scores per chunk (512 MB in float32)


def block_attention_map(q: Tensor, k: Tensor, *, block_size: int = 64, mode: Literal["max", "mass"] = "max",
                        scale: float | None = None, attention_mask: Tensor | None = None,
                        lse: Tensor | None = None) -> Tensor:
    """Block map [B, Hq, n, n] (float32, zeros above the diagonal) of causal attention softmax(q k^T).

    q [B, Hq, S, D] and k [B, Hkv, S, D] as the attention sees them (post-RoPE); GQA: query head h
    uses KV head h // (Hq // Hkv). ``attention_mask`` [B, S], 1 = real token. ``lse`` [B, Hq, S]:
    the rows' natural-log sum of exp(scores), if already known.
    """
    _check(q, k, mode, attention_mask, lse)
    b, hq, s, d = q.shape
    hkv, n = k.shape[1], -(-s // block_size)
    scale = d**-0.5 if scale is None else scale
    valid = (torch.ones(b, s, dtype=torch.bool, device=q.device) if attention_mask is None
             else attention_mask.to(device=q.device, dtype=torch.bool))
    out = torch.zeros(b, hq, n, n, dtype=torch.float32, device=q.device)
    rows_per_chunk = max(1, CHUNK_ELEMENTS // (b * hq * s * block_size)) * block_size
    step = _compiled_chunk() if q.is_cuda else chunk_map
    # query heads grouped by KV head: [B, Hkv, G, S, D] so K is never repeated
    qg = q.view(b, hkv, hq // hkv, s, d)
    lse_g = None if lse is None else lse.view(b, hkv, hq // hkv, s)
    for start in range(0, s, rows_per_chunk):
        stop = min(s, start + rows_per_chunk)
        block = step(qg[:, :, :, start:stop], k[:, :, :stop], valid[:, start:stop], valid[:, :stop],
                     None if lse_g is None else lse_g[:, :, :, start:stop], start, scale, block_size, mode == "max")
        out[:, :, start // block_size: -(-stop // block_size), : block.shape[-1]] = block.flatten(1, 2)
    if mode == "max":
        out = out / out.sum(-1, keepdim=True).clamp(min=torch.finfo(torch.float32).tiny)
    return out


def chunk_map(q: Tensor, k: Tensor, q_valid: Tensor, k_valid: Tensor, lse: Tensor | None, start: int,
              scale: float, bs: int, tile_max: bool) -> Tensor:
    """Block map rows for queries ``start .. start + R`` ([B, Hkv, G, R, D]) against keys ``0 .. start + R``."""
    b, hkv, g, r, d = q.shape
    kv_len = k.shape[2]
    scores = torch.einsum("bhgrd,bhkd->bhgrk", q.float(), k.float()) * scale
    qpos = torch.arange(start, start + r, device=q.device)
    allowed = (torch.arange(kv_len, device=q.device)[None, :] <= qpos[:, None])[None] & k_valid[:, None, :]
    allowed = allowed & q_valid[:, :, None]
    scores = scores.masked_fill(~allowed[:, None, None], float("-inf"))
    if lse is None:
        lse = scores.logsumexp(-1)
    probs = (scores - lse.float()[..., None]).exp().nan_to_num(0.0)  # fully masked rows: 0, not NaN
    pad_q, pad_k = -r % bs, -kv_len % bs
    probs = torch.nn.functional.pad(probs, (0, pad_k, 0, pad_q))
    tiles = probs.view(b, hkv, g, (r + pad_q) // bs, bs, (kv_len + pad_k) // bs, bs)
    if tile_max:
        return tiles.amax(dim=(4, 6))
    counts = torch.nn.functional.pad(q_valid, (0, pad_q)).view(b, 1, 1, -1, bs).sum(-1, keepdim=True)
    return tiles.sum(dim=(4, 6)) / counts.clamp(min=1)


@cache
def _compiled_chunk() -> Callable[..., Tensor]:
    return torch.compile(chunk_map, dynamic=True)


def _check(q: Tensor, k: Tensor, mode: str, attention_mask: Tensor | None, lse: Tensor | None) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown ground-truth mode {mode!r}; choose one of {MODES}")
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"expected q [B, Hq, S, D] and k [B, Hkv, S, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]})")
    if attention_mask is not None and tuple(attention_mask.shape) != (q.shape[0], q.shape[2]):
        raise ValueError(f"attention_mask must be [B, S] = {(q.shape[0], q.shape[2])}, got {tuple(attention_mask.shape)}")
    if lse is not None and tuple(lse.shape) != tuple(q.shape[:3]):
        raise ValueError(f"lse must be [B, Hq, S] = {tuple(q.shape[:3])}, got {tuple(lse.shape)}")
    if not (torch.isfinite(q).all() and torch.isfinite(k).all()):
        raise ValueError("q and k must be finite (found NaN or inf)")


__all__ = ["MODES", "block_attention_map", "chunk_map"]
