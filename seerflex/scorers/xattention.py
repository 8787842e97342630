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
        (nq, nk), per_q, per_k = layout.shape, layout.q_block_size // s, layout.block_size // s
        valid = torch.ones(b, seq, dtype=torch.bool, device=q.device) if layout.valid_tokens is None \
            else layout.valid_tokens
        q_len, k_len = nq * layout.q_block_size, nk * layout.block_size  # each padded to its own blocks
        q_valid, k_valid = (torch.nn.functional.pad(valid, (0, size - seq)).view(b, size // s, s).any(-1)
                            for size in (q_len, k_len))  # stride groups holding a real token
        q, k = (torch.nn.functional.pad(t.float(), (0, 0, 0, size - seq)) for t, size in ((q, q_len), (k, k_len)))
        qs = torch.cat([q[:, :, s - 1 - t::s] for t in range(s)], dim=-1)  # [b, h, nq * per_q, d * s]
        ks = torch.cat([k[:, :, t::s] for t in range(s)], dim=-1)  # [b, h, nk * per_k, d * s]
        mass = torch.zeros(b, h, nq, nk, dtype=torch.float32, device=q.device)
        rows_per_chunk = max(1, CHUNK_ELEMENTS // (b * h * nk * per_k * per_q)) * per_q
        cols = torch.arange(nk * per_k, device=q.device)
        for start in range(0, nq * per_q, rows_per_chunk):
            stop = min(nq * per_q, start + rows_per_chunk)
            scores = qs[:, :, start:stop] @ ks.transpose(-1, -2) * (d ** -0.5 / s)
            rows = torch.arange(start, stop, device=q.device)
            allowed = (cols[None, :] <= rows[:, None])[None, None] & k_valid[:, None, None, :]
            probs = scores.masked_fill(~allowed, float("-inf")).softmax(-1).nan_to_num(0.0)
            probs = probs * q_valid[:, None, start:stop, None]
            tiles = probs.view(b, h, (stop - start) // per_q, per_q, nk, per_k)
            mass[:, :, start // per_q: stop // per_q] = tiles.sum((3, 5))
        scores = mass.clamp(min=1e-30).log()
        return scores.masked_fill(~layout.selectable_blocks(q.device), float("-inf"))
