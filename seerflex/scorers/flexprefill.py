"""FlexPrefill (Lai et al. 2025, ByteDance-Seed/FlexPrefill): a per-head choice between two estimates.

For each head the last ``last_q`` queries give two block distributions over the key blocks: an
*estimate* softmax(mean(q_last) . avgpool(K)^T / sqrt(d)) and the *measured* block-pooled vertical
mass of their real attention. When the square root of their Jensen-Shannon divergence is below
``tau`` the head is query-aware: its tiles are scored by pooled Q . pooled K (``pooled``). Otherwise
it follows vertical and slash lines (``vertical_slash``). Both read each sequence's last real queries.
Published defaults: tau 0.1, 128 last
queries, a cumulative-mass budget gamma 0.95 (``topp:0.95:local=0``).
"""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.gates.pooling import block_pool
from seerflex.last_queries import last_rows
from seerflex.scorer import ScorerInputs
from seerflex.scorers.pooled import PooledQKScores
from seerflex.scorers.vertical_slash import block_sums, last_query_lines, tile_scores


class FlexPrefillScores:
    name = "flexprefill"

    def __init__(self, tau: float = 0.1, last_q: int = 128) -> None:
        self.tau, self.last_q = tau, last_q

    def query_aware(self, x: ScorerInputs, lines: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[B, H] bool: the heads whose estimate is within ``tau`` (sqrt JS) of their measured distribution.
        ``lines``: ``last_query_lines`` of ``x`` when the caller already has them."""
        return self.distance(x, lines) < self.tau

    def distance(self, x: ScorerInputs, lines: tuple[Tensor, Tensor] | None = None) -> Tensor:
        """[B, H] square root of the Jensen-Shannon divergence between each head's estimate and measurement."""
        layout = x.layout
        vertical, _ = last_query_lines(x, self.last_q) if lines is None else lines
        measured = block_sums(vertical, layout)
        measured = measured / measured.sum(-1, keepdim=True).clamp(min=1e-30)
        q, k = x.q, x.k.repeat_interleave(x.q.shape[1] // x.k.shape[1], dim=1)
        b, h, s, d = q.shape
        valid = torch.ones(b, s, dtype=torch.bool, device=q.device) if layout.valid_tokens is None \
            else layout.valid_tokens
        rows, real_rows = last_rows(valid, self.last_q)  # the same queries as the measured lines
        last = q.gather(2, rows[:, None, :, None].expand(b, h, rows.shape[1], d)).float() * real_rows[:, None, :, None]
        mean_q = last.sum(2, keepdim=True) / real_rows.sum(-1).clamp(min=1)[:, None, None, None]  # [b, h, 1, d]
        pooled_k = block_pool(k, ("avg",), layout.block_size, layout.valid_tokens).float()  # [b, h, n, d]
        logits = (mean_q @ pooled_k.transpose(-1, -2))[:, :, 0] * (d ** -0.5 if x.scale is None else x.scale)
        seen = layout.selectable_blocks(q.device)[:, 0].expand(b, -1, -1)  # [b, nq, n]
        seen = seen[torch.arange(b, device=q.device), rows[:, -1] // layout.q_block_size]  # the last real query's row
        estimate = logits.masked_fill(~seen[:, None, :], float("-inf")).softmax(-1)
        middle = (estimate + measured) / 2
        js = 0.5 * (kl(estimate, middle) + kl(measured, middle))
        return js.clamp(min=0).sqrt()

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        lines = last_query_lines(x, self.last_q)  # the last queries' attention, computed once for both uses
        return torch.where(self.query_aware(x, lines)[:, :, None, None], PooledQKScores().score_blocks(x),
                           tile_scores(*lines, x.layout))


def kl(p: Tensor, q: Tensor) -> Tensor:
    """KL(p || q) over the last axis; zero entries of p contribute nothing."""
    return torch.where(p > 0, p * (p.clamp(min=1e-30).log() - q.clamp(min=1e-30).log()), 0.0).sum(-1)
