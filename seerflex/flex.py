"""Calling flex_attention: one compiled function per process, kernel options per device.

Compiling once and reusing it is what makes sparse prefill fast; the BlockMask and its captured
tensors are inputs, so new masks, lengths (after the first dynamic recompile) and policies reuse
the same kernels.
"""

from __future__ import annotations

from functools import cache
from typing import Any, Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention


@cache
def compiled_flex_attention() -> Callable[..., Tensor]:
    return torch.compile(flex_attention, dynamic=None)


def kernel_options(device: torch.device, head_dim: int, block_size: int) -> dict[str, Any] | None:
    """Forward tile sizes and pipelining for this block size.

    On GPU the mask's block size must be a multiple of the kernel tile; the default tiles (128 x 64
    at head 128) reject 64- and 32-token blocks ("Q and KV block size must be divisible by BLOCK_M
    and BLOCK_N"), so tiles follow the block size up to 64. With 64 x 64 tiles, 4 warps and 2 stages
    ran the sparse kernel 1.9x faster than the defaults on H100 (32k, head 128, density 0.1:
    2.62 vs 5.06 ms; benchmarks/results/2026-11-23_h100_flex_compile_modes_v1.json).
    """
    if device.type != "cuda":
        return None
    tile = min(block_size, 64)
    return {"BLOCK_M": tile, "BLOCK_N": tile, "num_warps": 4, "num_stages": 2}


def sparse_attention(q: Tensor, k: Tensor, v: Tensor, block_mask: BlockMask, *, scale: float | None,
                     compile: bool | None) -> Tensor:
    """flex_attention over ``block_mask`` (GQA when K/V have fewer heads than Q)."""
    use_compiled = q.is_cuda if compile is None else compile
    fn = compiled_flex_attention() if use_compiled else flex_attention
    return fn(q, k, v, block_mask=block_mask, scale=scale, enable_gqa=q.shape[1] != k.shape[1],
              kernel_options=kernel_options(q.device, q.shape[-1], block_mask.BLOCK_SIZE[0]))


def dense_attention(q: Tensor, k: Tensor, v: Tensor, attention_mask: Tensor | None = None, *,
                    scale: float | None = None) -> Tensor:
    """Causal SDPA, queries aligned to the end of the keys (prefill, chunked prefill and decode).

    ``attention_mask`` is [B, Skv] with 1 for real tokens. Queries with no real key to attend
    (left padding) attend everything instead of producing NaN; their outputs are padding anyway.
    """
    sq, skv = q.shape[2], k.shape[2]
    gqa = q.shape[1] != k.shape[1]
    if attention_mask is None and sq in (1, skv):
        return torch.nn.functional.scaled_dot_product_attention(q, k, v, is_causal=sq > 1, scale=scale,
                                                                enable_gqa=gqa)
    rows = torch.arange(skv - sq, skv, device=q.device)[:, None]
    mask = (torch.arange(skv, device=q.device)[None, :] <= rows)[None, None]
    if attention_mask is not None:
        mask = mask & attention_mask.bool()[:, None, None, :]
    mask = mask | ~mask.any(-1, keepdim=True)
    return torch.nn.functional.scaled_dot_product_attention(q, k, v, attn_mask=mask, scale=scale, enable_gqa=gqa)
