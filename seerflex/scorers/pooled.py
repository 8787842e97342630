"""Pooled Q.K: average-pooled post-RoPE Q . average-pooled K per block, no parameters."""

from __future__ import annotations

from torch import Tensor

from seerflex.gates.pooling import block_pool
from seerflex.scorer import ScorerInputs


class PooledQKScores:
    name = "pooled"

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        q, k, layout = x.q, x.k, x.layout
        qb = block_pool(q, ("avg",), layout.q_block_size, layout.valid_tokens).float()
        kb = block_pool(k, ("avg",), layout.block_size, layout.valid_tokens).float()
        kb = kb.repeat_interleave(q.shape[1] // k.shape[1], dim=1)
        scores = qb @ kb.transpose(-1, -2) * q.shape[-1] ** -0.5
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))
