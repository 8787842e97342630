"""Recency: newer key blocks score higher, so a policy keeps sink + the most recent blocks
(StreamingLLM-style sink + local window, grown to the requested density)."""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.scorer import ScorerInputs


class RecencyScores:
    name = "recency"

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        n, q = x.layout.num_blocks, x.q
        pos = torch.arange(n, device=q.device, dtype=torch.float32)
        scores = (pos[None, :] - pos[:, None]).expand(q.shape[0], q.shape[1], n, n)
        return scores.masked_fill(~x.layout.selectable_blocks(q.device), float("-inf"))
