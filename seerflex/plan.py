"""A sparse call of the learned gate as one compiled graph: gate logits -> policy -> BlockMask indices
(``planned_block_mask``), and with the kernel (``planned_attention``).

Run one after the other, the gate, the policy and the index builder are three compiled graphs with
Python, guards and float32 [B, H, nq, nk] scores between them. For the common case (learned gate, no
padding, compiled) one graph replaces them, so inductor fuses the masked logits into the policy's
priorities. ``planned_attention`` adds the BlockMask and flex_attention: one dynamo call per layer, which
is what short prompts (launch- and Python-bound) pay for, and on CUDA what a training step (host-bound at
32k, benchmarks/NOTES.md v14) pays each way: the BlockMask then carries the backward's indices and a
learning gate's logits leave the graph with their gradient. ``planned_block_mask`` stays for training off
CUDA, where flex has no backward and masked SDPA attends.
"""

from __future__ import annotations

from contextlib import nullcontext
from typing import Any, Callable

import torch
from torch import Tensor
from torch.nn.attention.flex_attention import BlockMask, flex_attention

from seerflex.block_mask import causal_block_mask, causal_block_mask_of, selection_indices
from seerflex.compile import compiled, compiles
from seerflex.flex import backward_tiles, flex_options, within_recompile_limit
from seerflex.gates.attn_gate import AttnGate, RopeTables, block_logits
from seerflex.last_queries import last_query_inputs, with_last_queries
from seerflex.layout import BlockLayout
from seerflex.policies.base import BlockSelection, Policy, select_blocks

Plan = tuple[Tensor, Tensor, Tensor, tuple[Tensor, ...], Tensor, Tensor | None]


def fusable(gate: AttnGate, scorer: object, layout: BlockLayout, mode: str, device: torch.device) -> bool:
    """The learned gate scores, nothing is padded and the mode compiles (a training gate too: its logits
    leave the graph with their gradient)."""
    return scorer is gate and layout.valid_tokens is None and compiles(mode, device)


def plan(q: Tensor, k: Tensor, q_weight: Tensor | None, k_weight: Tensor, rope: RopeTables,
         q_pools: tuple[str, ...], k_pools: tuple[str, ...], block_size: int, q_block_size: int,
         rule: Callable[..., Tensor], params: dict[str, Tensor], bound: int, dense_rows: int, ratio: int,
         rank_dtype: torch.dtype, transpose: bool = False, with_logits: bool = False,
         last: tuple[Tensor, Tensor, float | None] | None = None) -> Plan:
    """(order, count, dense tail, BlockMask indices (+ the backward's with ``transpose``), any NaN score,
    the logits when ``with_logits`` (for a training gate's loss), else None) as pure tensor code. ``last``:
    post-RoPE Q/K and scale whose last queries rank a ``vertical`` policy's columns (``seerflex.last_queries``)."""
    scores = block_logits(q, k, q_weight, k_weight, rope, None, None, q_pools, k_pools, block_size, q_block_size)
    ranked = scores.detach()
    if last is not None:
        ranked = with_last_queries(ranked, last[0], last[1], None, block_size, q_block_size, last[2])
    order, count, tail = select_blocks(rule, ranked, None, None, params, bound, dense_rows, ratio, rank_dtype)
    indices = selection_indices(order, count, dense_rows, scores.shape[-1], ratio, transpose)
    return order, count, tail, indices, torch.isnan(scores).any(), scores if with_logits else None


def attend(q: Tensor, k: Tensor, v: Tensor, plan_args: tuple, scale: float | None,
           score_mod: Callable[..., Tensor] | None, options: dict[str, Any] | None) -> tuple[Tensor, Plan]:
    """``plan`` over ``plan_args`` (gate Q/K first), its BlockMask and flex_attention, as one function (with the
    backward's transposed indices when ``plan_args`` ask for them)."""
    planned = plan(*plan_args)
    block_mask = causal_block_mask_of(planned[3], q.shape[2], plan_args[8], plan_args[7])
    out = flex_attention(q, k, v, score_mod=score_mod, block_mask=block_mask, scale=scale,
                         enable_gqa=q.shape[1] != k.shape[1], kernel_options=options)
    return out, planned


def plan_args(gate: AttnGate, policy: Policy, q: Tensor, k: Tensor, layout: BlockLayout, learns: bool = False) -> tuple:
    """``plan``'s arguments for pre-RoPE ``q``/``k`` of an unpadded layout (checked against the gate); the gate's
    weights detached unless it ``learns`` in this call (a training gate that skips its loss gets no gradient)."""
    layout, rope = gate.prepare(q, k, layout)
    weights = (gate.q_weight, gate.k_weight) if learns else (None if gate.q_weight is None else gate.q_weight.detach(),
                                                             gate.k_weight.detach())
    return (q, k, *weights, rope, gate.gate_type.q_pools, gate.gate_type.k_pools,
            gate.block_size, gate.q_block_size, *policy.select_args(layout, gate.num_heads, q.device))


def planned_block_mask(gate: AttnGate, policy: Policy, q: Tensor, k: Tensor, layout: BlockLayout, *, mode: str,
                       compute_q_blocks: bool = False, with_logits: bool = False,
                       last: tuple[Tensor, Tensor, float | None] | None = None
                       ) -> tuple[BlockMask, BlockSelection, Tensor, Tensor | None]:
    """(BlockMask, the selection it encodes, a 0-d NaN flag, the gate's logits if ``with_logits``) for
    pre-RoPE ``q``/``k`` of an unpadded layout. A training gate's logits come out with their gradient
    (the graph's backward is compiled too), so its loss needs no second, eager pass of the gate."""
    fn = compiled(plan, mode, q.device)
    order, count, tail, indices, nan, logits = fn(*plan_args(gate, policy, q, k, layout, with_logits),
                                                  compute_q_blocks, with_logits, last)
    block_mask = causal_block_mask(indices, layout)
    return block_mask, BlockSelection(order, count, layout.num_blocks, tail), nan, logits


def planned_attention(gate: AttnGate, policy: Policy, q: Tensor, k: Tensor, v: Tensor, gate_q: Tensor,
                      gate_k: Tensor, layout: BlockLayout, *, mode: str, backend: str, scale: float | None = None,
                      score_mod: Callable[..., Tensor] | None = None, backward: bool = False,
                      with_logits: bool = False, graphs: bool = False
                      ) -> tuple[Tensor, BlockSelection, Tensor, Tensor | None]:
    """(output, selection, NaN flag, the gate's logits if ``with_logits``): the whole layer after the projections
    as one compiled graph. ``backward``: the BlockMask carries the transposed indices and AOTAutograd compiles the
    graph's backward (flex's and, with ``with_logits``, the gate's), for training on CUDA (flex has no CPU
    backward): one dynamo call per layer each way instead of the plan's and flex's. ``graphs``: the graph replays
    as a CUDA graph (``RuntimeOptions.cuda_graphs``). Compiling modes only: the BlockMask's ``mask_mod`` is
    causal, and eager flex_attention evaluates ``mask_mod`` alone, so it would attend to every causal key."""
    if not compiles(mode, q.device):
        raise ValueError(f"planned_attention needs a compiling mode, got {mode!r} on {q.device.type}: eager "
                         "flex_attention ignores the BlockMask's blocks (seerflex.block_mask)")
    options = flex_options(q, (layout.q_block_size, layout.block_size), backend, compiled=True,
                           plain_mask=score_mod is None, backward=backward)
    fn = compiled(attend, mode, q.device, dynamic=mode != "static", graphs=graphs)
    args = (*plan_args(gate, policy, gate_q, gate_k, layout, with_logits), backward, with_logits,
            last_query_inputs(policy, q, k, scale))
    with backward_tiles() if backward else nullcontext():
        out, (order, count, tail, _, nan, logits) = within_recompile_limit(
            lambda: fn(q, k, v, args, scale, score_mod, options), mode)
    return out, BlockSelection(order, count, layout.num_blocks, tail), nan, logits
