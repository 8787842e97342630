"""Threshold policy: keep every block whose gate softmax score exceeds a threshold.

The softmax runs over a row's selectable key blocks, so the threshold is a probability
(the original used 5e-4 .. 5e-3). Rows adapt: a peaked row keeps few blocks, a flat one many.
"""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seerflex.block_masks.policy import PerHead, Policy, check_range, softmax_probs


@dataclass(frozen=True)
class Threshold(Policy):
    threshold: PerHead = 1e-3

    name = "threshold"

    def __post_init__(self) -> None:
        super().__post_init__()
        check_range(self, "threshold", self.threshold, 0.0, 1.0)

    def row_counts(self, scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor) -> Tensor:
        t = self.per_head(self.threshold, scores[..., 0])[..., None]
        above = (softmax_probs(scores) > t) & selectable & ~forced
        return (forced.sum(-1) + above.sum(-1)).float()
