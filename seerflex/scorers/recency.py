"""Recency: newer key blocks score higher, so a policy keeps sink + the most recent blocks
(StreamingLLM-style sink + local window, grown to the requested density)."""

from __future__ import annotations

import torch
from torch import Tensor

from seerflex.scorer import ScorerInputs


class RecencyScores:
    name = "recency"

    def score_blocks(self, x: ScorerInputs) -> Tensor:
        layout, q = x.layout, x.q
        (nq, nk), r = layout.shape, layout.ratio
        keys = torch.arange(nk, device=q.device, dtype=torch.float32)
        queries = torch.arange(nq, device=q.device, dtype=torch.float32) * r
        scores = (keys[None, :] - queries[:, None]).expand(q.shape[0], q.shape[1], nq, nk)
        return scores.masked_fill(~x.layout.selectable_blocks(q.device), float("-inf"))
