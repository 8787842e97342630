"""XAttention (Xu et al. 2025, mit-han-lab/x-attention): block mass estimated from antidiagonals.

Within every ``stride`` x ``stride`` sub-tile of Q K^T only the antidiagonal is summed: query rows
``(stride - 1 - t)::stride`` and key rows ``t::stride`` concatenated on the channel axis give those sums
as one product. Scores / sqrt(d) / stride, causal at the strided level, softmax per row, summed over
each block tile: an estimate of the attention mass a query block puts in a key block. The log of that
mass is the score, so softmax(scores) is the normalised mass and ``TopP(tau)`` with one sink block and
no local window is XAttention's rule (first block and diagonal, then by mass until tau of the row):
``--scorers xattention --policies topp:0.9:local=0``. Defaults as published: stride 8, tau ~0.9.
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.scorer import ScorerInputs

CHUNK_ELEMENTS = 1 << 26  # strided scores per chunk of query blocks


class XAttentionScores:
    name = "xattention"

    def __init__(self, stride: int = 8) -> None:
        self.stride = stride

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        layout, s = x.layout, self.stride
        if layout.block_size % s:
            raise ValueError(f"XAttention's stride {s} must divide the block size {layout.block_size}")
        q, k = x.q, x.k.repeat_interleave(x.q.shape[1] // x.k.shape[1], dim=1)
        b, h, seq, d = q.shape
        n, per_block = layout.num_blocks, layout.block_size // s
        pad = n * layout.block_size - seq
        valid = torch.ones(b, seq, dtype=torch.bool, device=q.device) if layout.valid_tokens is None \
            else layout.valid_tokens
        valid = torch.nn.functional.pad(valid, (0, pad)).view(b, n * per_block, s).any(-1)  # strided groups
        q, k = (torch.nn.functional.pad(t.float(), (0, 0, 0, pad)) for t in (q, k))
        qs = torch.cat([q[:, :, s - 1 - t::s] for t in range(s)], dim=-1)  # [b, h, n * per_block, d * s]
        ks = torch.cat([k[:, :, t::s] for t in range(s)], dim=-1)
        mass = torch.zeros(b, h, n, n, dtype=torch.float32, device=q.device)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // (b * h * n * per_block * per_block)) * per_block
        cols = torch.arange(n * per_block, device=q.device)
        for start in range(0, n * per_block, rows_per_chunk):
            stop = min(n * per_block, start + rows_per_chunk)
            scores = qs[:, :, start:stop] @ ks.transpose(-1, -2) * (d ** -0.5 / s)
            rows = torch.arange(start, stop, device=q.device)
            allowed = (cols[None, :] <= rows[:, None])[None, None] & valid[:, None, None, :]
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
            probs = probs * valid[:, None, start:stop, None]
            tiles = probs.view(b, h, (stop - start) // per_block, per_block, n, per_block)
            mass[:, :, start // per_block: stop // per_block] = tiles.sum((3, 5))
        scores = mass.clamp(min=1e-30).log()
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))
