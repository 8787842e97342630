"""Independent float64 references the fast paths are checked against."""

from __future__ import annotations

import torch
from torch import Tensor


def token_mask(kept: Tensor | None, seq_len: int, block_size: int, valid: Tensor | None,
               q_block_size: int | None = None) -> Tensor:
    """[B|1, H|1, S, S] bool: causal, inside a kept (query block, key block) tile, real key."""
    pos = torch.arange(seq_len)
    mask = (pos[None, :] <= pos[:, None])[None, None]
    if kept is not None:
        q_blk = pos // (q_block_size or block_size)
        mask = mask & kept[:, :, q_blk][:, :, :, pos // block_size]
    if valid is not None:
        mask = mask & valid.bool()[:, None, None, :]
    return mask


def dense_attention_f64(q: Tensor, k: Tensor, v: Tensor, mask: Tensor, scale: float | None = None) -> Tensor:
    """Masked softmax attention in float64; rows with no allowed key give 0 (as flex does)."""
    q, k, v = q.double(), k.double(), v.double()
    group = q.shape[1] // k.shape[1]
    k, v = k.repeat_interleave(group, 1), v.repeat_interleave(group, 1)
    scores = q @ k.transpose(-1, -2) * (q.shape[-1] ** -0.5 if scale is None else scale)
    scores = scores.masked_fill(~mask, float("-inf"))
    probs = scores.softmax(-1).nan_to_num(0.0)
    return probs @ v


def relative_error(out: Tensor, ref: Tensor, rows: Tensor | None = None) -> float:
    """||out - ref|| / ||ref||, optionally over the query rows selected by ``rows`` [B, S]."""
    diff, base = out.double() - ref.double(), ref.double()
    if rows is not None:
        diff, base = diff * rows[:, None, :, None], base * rows[:, None, :, None]
    return float(diff.norm() / base.norm())
