"""Block pooling of Q or K along the sequence, ceil mode, padding-aware.

A short last block is pooled over the tokens it has, and padded tokens never enter a pool, so a
padded batch gets the same pooled values per sequence as the sequences run one by one.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.gates import triton_pool


def pad_to_blocks(x: Tensor, block_size: int) -> Tensor:
    """Right-pad dim 2 of [B, H, S, D] with zeros to a multiple of ``block_size``."""
    pad = -x.shape[2] % block_size
    return torch.nn.functional.pad(x, (0, 0, 0, pad)) if pad else x


def block_pool(x: Tensor, pools: tuple[str, ...], block_size: int, valid: Tensor | None) -> Tensor:
    """Pool [B, H, S, D] into [B, H, ceil(S / bs), D * len(pools)] (poolings concatenated).

    ``valid`` is [B, S] bool (True = real token) or None. Blocks without a real token pool to 0.
    """
    b, h, s, d = x.shape
    n = -(-s // block_size)
    if valid is None and triton_pool.usable(x, block_size):  # CUDA inference: one pass, every pool
        return triton_pool.block_pool_op(x, ",".join(pools), block_size)
    if valid is None and s % block_size == 0:  # common case: plain reductions, no masked copies
        tiles = x.view(b, h, n, block_size, d)
        reduce = {"avg": lambda t: t.mean(3), "max": lambda t: t.amax(3), "min": lambda t: t.amin(3)}
        return torch.cat([reduce[p](tiles) for p in pools], dim=-1)
    if valid is None:
        valid = torch.ones(b, s, dtype=torch.bool, device=x.device)
    tiles = pad_to_blocks(x, block_size).view(b, h, n, block_size, d)
    ok = torch.nn.functional.pad(valid, (0, n * block_size - s)).view(b, 1, n, block_size, 1)
    count = ok.sum(3)
    out = []
    for pool in pools:
        if pool == "avg":
            pooled = tiles.masked_fill(~ok, 0).sum(3) / count.clamp(min=1)
        elif pool == "max":
            pooled = tiles.masked_fill(~ok, float("-inf")).amax(3)
        else:
            pooled = tiles.masked_fill(~ok, float("inf")).amin(3)
        out.append(pooled.masked_fill(count == 0, 0))
    return torch.cat(out, dim=-1)
