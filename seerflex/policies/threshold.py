"""Threshold policy: keep every block whose gate softmax score exceeds a threshold.

The softmax runs over a row's selectable key blocks, so the threshold is a probability
(the original used 5e-4 .. 5e-3). Rows adapt: a peaked row keeps few blocks, a flat one many.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import Tensor

from seerflex.policies.base import PerHead, Policy, check_range, softmax_probs


@dataclass(frozen=True)
class Threshold(Policy):
    threshold: PerHead = 1e-3

    name = "threshold"
    rank_dtype = torch.float32  # the kept set is exactly the blocks above t: no ties from 16-bit keys

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "threshold", self.threshold, 0.0, 1.0)

    def count_bound(self, n: int, ratio: int = 1) -> int:
        """At most 1/t blocks can each hold more than t of a row's probability (plus forced ones)."""
        t = float(min(torch.as_tensor(self.threshold, dtype=torch.float64).reshape(-1)))
        return n if t <= 0 else min(n, ratio + self.sink + self.local + self.vertical + int(1 / t))

    def rule_parameters(self, n: int) -> dict[str, PerHead]:
        return {"threshold": self.threshold}

    @staticmethod
    def row_counts(scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor,
                   params: dict[str, Tensor]) -> Tensor:
        above = (softmax_probs(scores) > params["threshold"][..., None]) & selectable & ~forced
        return (forced.sum(-1) + above.sum(-1)).float()
