"""Training-free block scorers: the baselines a learned gate has to beat.

Each scorer stands where the gate stands (``SeerFlexAttention.scorer``), so every policy works
with it unchanged. Unlike the gate, they may look at the post-RoPE Q/K the attention itself uses.

* ``RecencyScores``: newer key blocks score higher, so a policy keeps sink + the most recent blocks
  (StreamingLLM-style sink + local window, grown to the requested density).
* ``PooledQKScores``: average-pooled Q . average-pooled K per block, no parameters.
* ``OracleScores``: the exact block-pooled attention map (``seerflex.ground_truth``), an upper bound
  on what any gate can know.
"""

from __future__ import annotations

from typing import Literal, Protocol

import torch
from torch import Tensor

from seerflex.block_masks.layout import BlockLayout
from seerflex.gates.pooling import block_pool


class BlockScorer(Protocol):
    """(pre-RoPE gate Q/K, post-RoPE attention Q/K, layout) -> scores [B, Hq, n, n], -inf = unselectable."""

    def __call__(self, gate_q: Tensor, gate_k: Tensor, q: Tensor, k: Tensor, layout: BlockLayout) -> Tensor: ...


class RecencyScores:
    name = "recency"

    def __call__(self, gate_q: Tensor, gate_k: Tensor, q: Tensor, k: Tensor, layout: BlockLayout) -> Tensor:
        n = layout.num_blocks
        pos = torch.arange(n, device=q.device, dtype=torch.float32)
        scores = (pos[None, :] - pos[:, None]).expand(q.shape[0], q.shape[1], n, n)
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))


class PooledQKScores:
    name = "pooled"

    def __call__(self, gate_q: Tensor, gate_k: Tensor, q: Tensor, k: Tensor, layout: BlockLayout) -> Tensor:
        qb = block_pool(q, ("avg",), layout.block_size, layout.valid_tokens).float()
        kb = block_pool(k, ("avg",), layout.block_size, layout.valid_tokens).float()
        kb = kb.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = qb @ kb.transpose(-1, -2) * q.shape[-1] ** -0.5
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))


class OracleScores:
    name = "oracle"

    def __init__(self, mode: Literal["max", "mass"] = "mass") -> None:
        self.mode = mode

    def __call__(self, gate_q: Tensor, gate_k: Tensor, q: Tensor, k: Tensor, layout: BlockLayout) -> Tensor:
        from seerflex.ground_truth import block_attention_map

        truth = block_attention_map(q, k, block_size=layout.block_size, mode=self.mode,
                                    attention_mask=layout.valid_tokens)
        scores = truth.clamp(min=1e-30).log()  # log keeps the order and makes softmax(scores) = truth
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))


SCORERS = {"recency": RecencyScores, "pooled": PooledQKScores, "oracle": OracleScores}
