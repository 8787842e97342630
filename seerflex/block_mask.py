"""Kept-block decisions -> FlexAttention ``BlockMask``, with no S x S tensor anywhere.

Tiles before the query block's diagonal group whose keys are all real are *full* (the kernel skips
``mask_mod``); the diagonal group (one tile for square blocks, r for query blocks r times the key
block) and tiles with padded keys are *partial*. Two routes:

- ``block_mask_from_selection``: the compiled-kernel fast path for unpadded batches. The policy's
  priority order already lists the diagonal group first and the other kept blocks after it, so the
  indices are that order itself: no nq x nk boolean mask, no compaction, no sort. Only the diagonal
  tiles are partial, so ``mask_mod`` is plain causal.
- ``build_block_mask``: any kept mask, padding included, indices by stream compaction (cumsum +
  scatter). Its ``mask_mod`` encodes the whole selection, because eager flex_attention ignores the
  block structure and evaluates only ``mask_mod``: eager, CPU and compiled runs agree.
"""

from __future__ import annotations

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask

from seerflex.compile import compiled, compiles
from seerflex.layout import BlockLayout, diagonal_blocks
from seerflex.policies.base import BlockSelection


def compact_indices(blocks: Tensor) -> tuple[Tensor, Tensor]:
    """[..., n] bool -> (count [...] int32, indices [..., n] int32 with the True columns first)."""
    n = blocks.shape[-1]
    count = blocks.sum(-1, dtype=torch.int32)
    target = torch.where(blocks, blocks.cumsum(-1, dtype=torch.int32) - 1, n).long()
    columns = torch.arange(n, dtype=torch.int32, device=blocks.device).expand(blocks.shape)
    out = torch.zeros(*blocks.shape[:-1], n + 1, dtype=torch.int32, device=blocks.device)
    return count, out.scatter_(-1, target, columns)[..., :n].contiguous()


def selection_mask_mod(kept: Tensor, layout: BlockLayout):
    """mask_mod: causal, kept block, real key. Looks the decision up per (b, h, q-block, kv-block)."""
    qb, kb, valid = layout.q_block_size, layout.block_size, layout.valid_tokens
    one_batch, one_head = kept.shape[0] == 1, kept.shape[1] == 1  # broadcast masks: index 0

    def mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
        ok = (kv_idx <= q_idx) & kept[0 if one_batch else b, 0 if one_head else h, q_idx // qb, kv_idx // kb]
        return ok if valid is None else ok & valid[b, kv_idx]

    return mask_mod


def block_indices(kept: Tensor, partial_keys: Tensor | None, ratio: int = 1) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(partial count, partial indices, full count, full indices) for ``from_kv_blocks``.

    ``partial_keys`` [B, nk] marks key blocks that mix padding and real tokens (None: no padding);
    ``ratio`` key blocks per query block.
    """
    nq, nk = kept.shape[-2:]
    diagonal = diagonal_blocks(nq, nk, ratio, kept.device)
    if partial_keys is None and ratio == 1:  # square blocks, no padding: only the diagonal tile is partial
        kv_num = kept.diagonal(dim1=-2, dim2=-1).to(torch.int32)
        kv_idx = torch.arange(nk, dtype=torch.int32, device=kept.device)[:, None].expand(kept.shape).contiguous()
        return (kv_num, kv_idx, *compact_indices(kept & ~diagonal))
    partial = diagonal if partial_keys is None else diagonal | partial_keys[:, None, None, :]
    return (*compact_indices(kept & partial), *compact_indices(kept & ~partial))


def build_block_mask(kept: Tensor, layout: BlockLayout, *, compute_q_blocks: bool = False,
                     compile: str = "auto") -> BlockMask:
    """BlockMask for causal attention restricted to ``kept`` [B, H, nq, nk] (B, H may be 1 to broadcast;
    otherwise H = query heads: GPU kernels map heads by modulo, not by GQA group).

    ``compute_q_blocks`` builds the transposed index only backward passes need. Compiled, the index
    computation is one fused graph (compaction alone: 0.094 vs 0.32 ms at 32k on H100,
    benchmarks/results/2026-11-23_h100_perf_experiments_v2.json).
    """
    nq, nk = layout.shape
    if kept.dim() != 4 or kept.shape[-2:] != (nq, nk) or kept.dtype != torch.bool:
        raise ValueError(f"kept must be a bool tensor [B, H, {nq}, {nk}], got {kept.dtype} {tuple(kept.shape)}")
    indices = compiled(block_indices, compile, kept.device, dynamic=True)
    kv_num, kv_idx, full_num, full_idx = indices(kept, layout.partial_blocks, layout.ratio)
    return BlockMask.from_kv_blocks(
        kv_num, kv_idx, full_num, full_idx,
        BLOCK_SIZE=(layout.q_block_size, layout.block_size),
        mask_mod=selection_mask_mod(kept, layout),
        seq_lengths=(layout.seq_len, layout.seq_len),
        compute_q_blocks=compute_q_blocks,
    )


def causal_mask_mod(b: Tensor, h: Tensor, q_idx: Tensor, kv_idx: Tensor) -> Tensor:
    return kv_idx <= q_idx


def selection_indices(order: Tensor, count: Tensor, dense_rows: int = 0, num_blocks: int | None = None,
                      ratio: int = 1, transpose: bool = False) -> tuple[Tensor, ...]:
    """``from_kv_blocks`` indices from a selection whose order starts with the diagonal group.

    Partial: the diagonal group (``ratio`` key blocks, fewer in a short last row). Full: the rest of
    the kept prefix, in priority order (the kernel accumulates an online softmax, so the visiting
    order does not change the result); in the last ``dense_rows`` rows every block before the
    diagonal group. Index rows are padded to ``num_blocks`` (nk, default nq) columns so the BlockMask
    stays a complete one (``to_dense``, transposes). ``transpose`` appends the per-key-block lists a
    backward pass reads (``transposed_indices``), so they compile into the same graph.
    """
    b, h, nq, width = order.shape
    nk = nq if num_blocks is None else num_blocks
    rows = torch.arange(nq, dtype=torch.int32, device=order.device)
    columns = torch.arange(nk, dtype=torch.int32, device=order.device)
    first = rows * ratio  # each row's first diagonal block
    diagonal = (nk - first).clamp(max=ratio)  # [nq]: diagonal blocks per row
    kv_idx = (first[:, None] + columns).clamp(max=nk - 1).expand(b, h, nq, nk)
    shift = (diagonal[:, None] + torch.arange(width, device=order.device)).clamp(max=width - 1)
    full_idx = torch.nn.functional.pad(order.gather(-1, shift.expand(b, h, nq, width)).to(torch.int32),
                                       (0, nk - width))
    full_num = (count - diagonal).to(torch.int32)
    if dense_rows:
        dense = rows >= nq - dense_rows
        full_idx = torch.where(dense[:, None], columns, full_idx)
        full_num = torch.where(dense, first, full_num)
    indices = (diagonal.expand(b, h, nq).contiguous(), kv_idx.contiguous(), full_num, full_idx)
    return indices + transposed_indices(indices) if transpose else indices


def transposed_indices(indices: tuple[Tensor, Tensor, Tensor, Tensor]) -> tuple[Tensor, Tensor, Tensor, Tensor]:
    """(q count, q indices, full q count, full q indices) of ``from_kv_blocks`` indices: for each key block,
    the query blocks that list it, ascending, as ``compute_q_blocks`` makes them, but as pure tensor code
    that compiles with the rest (torch's transposition runs eagerly: a vmapped index_put and a stable sort
    per call and kind, 4 of the ~6 launches per layer and step it added to training). Entries after each
    count are 0 where torch lists the other blocks; no kernel reads them."""
    out: tuple[Tensor, ...] = ()
    for num, idx in (indices[:2], indices[2:]):
        nk = idx.shape[-1]
        listed = torch.arange(nk, device=idx.device) < num[..., None]
        slots = torch.where(listed, idx, nk).long()
        dense = torch.zeros(*idx.shape[:-1], nk + 1, dtype=torch.bool, device=idx.device).scatter_(-1, slots, True)
        out += compact_indices(dense[..., :nk].transpose(-1, -2))
    return out


def block_mask_for(selection: BlockSelection, layout: BlockLayout, *, compile: str = "auto",
                   compute_q_blocks: bool = False) -> BlockMask:
    """The BlockMask a layer runs: from the selection's order where that is exact (unpadded layout,
    compiled flex, which runs only the listed tiles), else from the kept mask with a mask_mod that
    encodes the whole selection (eager flex evaluates ``mask_mod`` over all of S x S)."""
    if layout.valid_tokens is None and compiles(compile, selection.order.device):
        return block_mask_from_selection(selection, layout, compute_q_blocks=compute_q_blocks, compile=compile)
    return build_block_mask(selection.kept, layout, compute_q_blocks=compute_q_blocks, compile=compile)


def block_mask_from_selection(selection: BlockSelection, layout: BlockLayout, *,
                              compute_q_blocks: bool = False, compile: str = "auto") -> BlockMask:
    """BlockMask straight from a policy's selection, for kernels that skip unlisted tiles.

    Only for unpadded layouts and compiled flex_attention: its ``mask_mod`` is causal only, so
    eager flex (which evaluates ``mask_mod`` everywhere) would attend to every causal key.
    """
    nq, nk = layout.shape
    if layout.valid_tokens is not None:
        raise ValueError("block_mask_from_selection needs an unpadded layout; use build_block_mask(selection.kept)")
    if selection.order.dim() != 4 or selection.order.shape[-2] != nq or selection.num_blocks != nk:
        raise ValueError(f"selection is for {tuple(selection.order.shape[-2:-1])} x {selection.num_blocks} blocks, "
                         f"layout has {nq} x {nk}")
    indices = compiled(selection_indices, compile, selection.order.device)
    return causal_block_mask(indices(selection.order, selection.count, selection.dense_rows, nk, layout.ratio,
                                     compute_q_blocks), layout)


def causal_block_mask(indices: tuple[Tensor, ...], layout: BlockLayout) -> BlockMask:
    """BlockMask from ``selection_indices`` output (4 tensors, or 8 with the transposed ones a backward
    reads): causal ``mask_mod`` on the partial diagonal tiles."""
    return causal_block_mask_of(indices, layout.seq_len, layout.q_block_size, layout.block_size)


def causal_block_mask_of(indices: tuple[Tensor, ...], seq_len: int, q_block_size: int, block_size: int) -> BlockMask:
    """``causal_block_mask`` from plain sizes (inside a compiled graph, where a layout object's ints would be
    specialised)."""
    if len(indices) not in (4, 8):
        raise ValueError(f"expected 4 or 8 index tensors, got {len(indices)}")
    q_side = indices[4:] if len(indices) == 8 else (None,) * 4
    return BlockMask((seq_len, seq_len), *indices[:4], *q_side, BLOCK_SIZE=(q_block_size, block_size),
                     mask_mod=causal_mask_mod)
