"""The pre-kernel work of a sparse call as one compiled graph: gate logits -> policy -> BlockMask indices.

Run one after the other, the gate, the policy and the index builder are three compiled graphs with
Python, guards and float32 [B, H, n, n] scores between them. For the common case (learned gate at
inference, no padding, compiled) ``planned_block_mask`` runs them as one graph, so inductor fuses
the masked logits into the policy's priorities and one call replaces three.
"""

from __future__ import annotations

from typing import Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask

from seerflex.block_mask import causal_block_mask, selection_indices
from seerflex.compile import compiled, compiles
from seerflex.gates.attn_gate import AttnGate, RopeTables, block_logits
from seerflex.layout import BlockLayout
from seerflex.policies.base import BlockSelection, Policy, select_blocks


def fusable(gate: AttnGate, scorer: object, layout: BlockLayout, mode: str, device: torch.device) -> bool:
    """The learned gate scores, nothing is padded, the gate does not train and the mode compiles."""
    return scorer is gate and layout.valid_tokens is None and not gate.trains() and compiles(mode, device)


def plan(q: Tensor, k: Tensor, q_weight: Tensor | None, k_weight: Tensor, rope: RopeTables,
         q_pools: tuple[str, ...], k_pools: tuple[str, ...], block_size: int, q_block_size: int,
         rule: Callable[..., Tensor], params: dict[str, Tensor], bound: int, dense_rows: int, ratio: int
         ) -> tuple[Tensor, Tensor, Tensor, tuple[Tensor, Tensor, Tensor, Tensor], Tensor]:
    """(order, count, dense tail, BlockMask indices, any NaN score) as pure tensor code."""
    scores = block_logits(q, k, q_weight, k_weight, rope, None, None, q_pools, k_pools, block_size, q_block_size)
    order, count, tail = select_blocks(rule, scores, None, None, params, bound, dense_rows, ratio)
    indices = selection_indices(order, count, dense_rows, scores.shape[-1], ratio)
    return order, count, tail, indices, torch.isnan(scores).any()


def planned_block_mask(gate: AttnGate, policy: Policy, q: Tensor, k: Tensor, layout: BlockLayout, *, mode: str,
                       compute_q_blocks: bool = False) -> tuple[BlockMask, BlockSelection, Tensor]:
    """(BlockMask, the selection it encodes, a 0-d NaN flag) for pre-RoPE ``q``/``k`` of an unpadded layout."""
    layout, rope = gate.prepare(q, k, layout)
    fn = compiled(plan, mode, q.device)
    order, count, tail, indices, nan = fn(q, k, gate.q_weight, gate.k_weight, rope, gate.gate_type.q_pools,
                                          gate.gate_type.k_pools, gate.block_size, gate.q_block_size,
                                          *policy.select_args(layout, gate.num_heads, q.device))
    block_mask = causal_block_mask(indices, layout, compute_q_blocks=compute_q_blocks)
    return block_mask, BlockSelection(order, count, layout.num_blocks, tail), nan
