"""Ground truth for gate distillation: the block-pooled attention map of the frozen model.

For every (head, query block i, key block j) of causal attention softmax(q k^T * scale):

* ``max`` (the original SeerAttention target): the largest softmax probability inside the tile,
  each row i then normalised to sum 1;
* ``mass``: the probability mass a query puts in key block j, averaged over block i's real queries
  (rows sum to 1 by construction) -- what a block-sparse mask actually keeps or loses.

Two routes compute the same map:

* PyTorch, chunked over query blocks against only the keys they can see, so memory stays
  O(B x H x chunk x S) and never S x S (CPU, float64 references, anything the kernels don't cover).
* Triton, for CUDA tensors: one QK^T-only pass for the row log-sum-exp (skipped when the caller
  already has ``lse`` from its dense flex pass), then one pass over the causal 2D tiles that reduces
  each tile to a single number in registers. No [S, S] or [S, S/bs] buffer exists, K is indexed by
  KV head (GQA without repeat_interleave), and the ``max`` mode needs no exponent per score:
  max_t,s exp(c*qk - lse_t) = exp(max_t (c*max_s qk - lse_t)).

``SEERFLEX_GT_BACKEND`` = ``torch`` | ``triton`` | ``auto`` (default) overrides the choice; ``triton``
on CPU tensors runs the kernels in Triton's interpreter (with TRITON_INTERPRET=1 set before triton is
imported), which is how the tests check them.
"""

from __future__ import annotations

import math
import os
from typing import Literal

import torch
from torch import Tensor

from seerflex.ground_truth.reference import chunk_map, merge_query_blocks, normalise, torch_block_map
from seerflex.ground_truth.triton_kernels import triton_block_map, triton_supported
from seerflex.layout import check_block_shape

MODES = ("max", "mass")
BACKEND_ENV = "SEERFLEX_GT_BACKEND"


def block_attention_map(q: Tensor, k: Tensor, *, block_size: int = 64, q_block_size: int | None = None,
                        mode: Literal["max", "mass"] = "max", scale: float | None = None,
                        attention_mask: Tensor | None = None, lse: Tensor | None = None,
                        rows: Tensor | None = None, check_finite: bool = True) -> Tensor:
    """Block map [B, Hq, nq, nk] (float32, nk = ceil(S / block_size), nq = ceil(S / q_block_size), zeros
    after each query block's diagonal group).

    ``q_block_size`` (default ``block_size``, else a multiple of it): the map is computed on square
    key-size tiles and their rows merged (``max``: the largest; ``mass``: the real-query-weighted mean).

    q [B, Hq, S, D] and k [B, Hkv, S, D] as the attention sees them (post-RoPE); GQA: query head h
    uses KV head h // (Hq // Hkv). ``attention_mask`` [B, S], 1 = real token: padded keys get no
    probability and padded queries contribute nothing (a fully padded query block is a zero row).
    ``lse`` [B, Hq, S]: the rows' natural-log sum of exp(scores), if a dense pass already made it
    (flex_attention's ``return_aux=AuxRequest(lse=True)``); it saves one pass over QK^T.
    ``rows``: indices of the query blocks to compute (1-D integers in [0, nq)); every other row is zero.
    The work is that of the chosen rows alone, so a loss on a random sample of rows pays for the sample.
    ``check_finite=False`` skips the NaN/inf check of q and k, a host sync (for callers in a training loop that
    check their loss instead; a given ``lse`` is still checked, and ``rows`` on the GPU are copied to the host).
    Runs without autograd (the target of a distillation loss needs no gradient).
    """
    _check(q, k, block_size, mode, attention_mask, lse, check_finite)
    q_block_size = block_size if q_block_size is None else q_block_size
    check_block_shape(q_block_size, block_size)
    square_rows = None if rows is None else _square_rows(rows, q.shape[2], block_size, q_block_size)
    scale = q.shape[-1] ** -0.5 if scale is None else float(scale)
    if not math.isfinite(scale) or scale <= 0:
        raise ValueError(f"scale must be a positive finite number, got {scale}")
    valid = None if attention_mask is None else attention_mask.to(device=q.device, dtype=torch.bool)
    with torch.no_grad():
        route = triton_block_map if _backend(q, k, block_size) == "triton" else torch_block_map
        raw = route(q, k, valid, lse, scale, block_size, mode, rows=square_rows)
        if q_block_size != block_size:
            raw = merge_query_blocks(raw, q_block_size // block_size, mode, valid, q.shape[2], block_size)
        return normalise(raw) if mode == "max" else raw


def _square_rows(rows: Tensor, seq_len: int, block_size: int, q_block_size: int) -> Tensor:
    """Query-block indices -> the rows of key-size tiles they cover (sorted, unique, on the CPU)."""
    nq, ratio = -(-seq_len // q_block_size), q_block_size // block_size
    if not isinstance(rows, Tensor) or rows.dim() != 1 or rows.is_floating_point() or rows.is_complex() \
            or rows.dtype == torch.bool:
        raise ValueError(f"rows must be a 1-D integer tensor of query-block indices, got "
                         f"{tuple(rows.shape) if isinstance(rows, Tensor) else type(rows).__name__}"
                         f"{' ' + str(rows.dtype) if isinstance(rows, Tensor) else ''}")
    rows = rows.detach().to("cpu", torch.int64)
    if rows.numel() and (int(rows.min()) < 0 or int(rows.max()) >= nq):
        raise ValueError(f"rows must lie in [0, {nq}) (the query blocks of {seq_len} tokens), got "
                         f"{int(rows.min())}..{int(rows.max())}")
    square = (rows[:, None] * ratio + torch.arange(ratio)).flatten()
    return square[square < -(-seq_len // block_size)].unique()


def _backend(q: Tensor, k: Tensor, block_size: int) -> str:
    choice = os.environ.get(BACKEND_ENV, "auto").strip().lower() or "auto"
    if choice not in ("auto", "torch", "triton"):
        raise ValueError(f"{BACKEND_ENV} must be auto, torch or triton, got {choice!r}")
    if choice == "auto":
        return "triton" if q.is_cuda and triton_supported(q, k, block_size) else "torch"
    return choice


def _check(q: Tensor, k: Tensor, block_size: int, mode: str, attention_mask: Tensor | None,
           lse: Tensor | None, check_finite: bool) -> None:
    if mode not in MODES:
        raise ValueError(f"unknown ground-truth mode {mode!r}; choose one of {MODES}")
    if isinstance(block_size, bool) or not isinstance(block_size, int) or block_size < 1:
        raise ValueError(f"block_size must be a positive int, got {block_size!r}")
    if not isinstance(q, Tensor) or not isinstance(k, Tensor):
        raise ValueError("q and k must be tensors")
    if q.dim() != 4 or k.dim() != 4 or q.shape[0] != k.shape[0] or q.shape[2:] != k.shape[2:]:
        raise ValueError(f"expected q [B, Hq, S, D] and k [B, Hkv, S, D], got {tuple(q.shape)} and {tuple(k.shape)}")
    if min(q.shape) == 0 or k.shape[1] == 0:
        raise ValueError(f"q and k must not be empty, got {tuple(q.shape)} and {tuple(k.shape)}")
    if q.shape[1] % k.shape[1]:
        raise ValueError(f"query heads ({q.shape[1]}) must be a multiple of KV heads ({k.shape[1]})")
    if not (q.is_floating_point() and k.is_floating_point()) or q.dtype != k.dtype or q.device != k.device:
        raise ValueError(f"q and k must be floating tensors of one dtype and device, got {q.dtype} on {q.device} "
                         f"and {k.dtype} on {k.device}")
    if attention_mask is not None:
        if not isinstance(attention_mask, Tensor) or tuple(attention_mask.shape) != (q.shape[0], q.shape[2]):
            shape = tuple(attention_mask.shape) if isinstance(attention_mask, Tensor) else type(attention_mask)
            raise ValueError(f"attention_mask must be [B, S] = {(q.shape[0], q.shape[2])}, got {shape}")
        if attention_mask.is_complex():
            raise ValueError("attention_mask must be bool or integer (1 = real token)")
    if lse is not None:
        if not isinstance(lse, Tensor) or tuple(lse.shape) != tuple(q.shape[:3]):
            shape = tuple(lse.shape) if isinstance(lse, Tensor) else type(lse)
            raise ValueError(f"lse must be [B, Hq, S] = {tuple(q.shape[:3])}, got {shape}")
        bad = ~torch.isfinite(lse)
        if attention_mask is not None:  # padded rows may carry -inf (flex gives that)
            bad &= attention_mask.to(device=lse.device, dtype=torch.bool)[:, None, :]
        if bad.any():
            raise ValueError("lse must be finite at real (unpadded) query positions (found NaN or inf)")
    if check_finite and not (_finite(q) and _finite(k)):
        raise ValueError("q and k must be finite (found NaN or inf)")


def _finite(t: Tensor) -> bool:
    # amax/amin propagate NaN and expose inf without an isfinite copy of a 32k-token q (134 MB)
    return bool(torch.isfinite(torch.stack([t.amax(), t.amin()])).all())


__all__ = ["MODES", "block_attention_map", "chunk_map", "merge_query_blocks", "normalise", "torch_block_map",
           "triton_block_map", "triton_supported"]
