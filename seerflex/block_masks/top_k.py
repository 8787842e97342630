"""Top-k policy: a fixed number of blocks per row, or a density.

Three forms: ``TopK(k=8)`` keeps 8 blocks in every row; ``TopK(density=0.1)`` keeps
round(0.1 * selectable blocks) per row (the kept fraction of each row is the density);
``TopK(density=0.1, uniform=True)`` is the original SeerAttention ``nz_ratio`` rule: one
k = floor((1 - sqrt(1 - nz)) * n_blocks) for every row, which keeps about ``nz`` of the causal
triangle. The forced blocks count towards k.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import Tensor

from seerflex.block_masks.policy import PerHead, Policy, check_range


@dataclass(frozen=True)
class TopK(Policy):
    k: PerHead | None = None
    density: PerHead | None = None
    uniform: bool = False
    dense_last_rows: int = 0

    name = "topk"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.k is None) == (self.density is None):
            raise ValueError("TopK needs exactly one of k (blocks per row) or density (fraction kept)")
        if self.k is not None:
            check_range(self, "k", self.k, 0, math.inf)
        else:
            check_range(self, "density", self.density, 0.0, 1.0)
        if self.uniform and self.density is None:
            raise ValueError("TopK(uniform=True) is the nz_ratio form: give density, not k")
        if self.dense_last_rows < 0:
            raise ValueError(f"TopK.dense_last_rows must be >= 0, got {self.dense_last_rows}")

    @classmethod
    def original(cls, nz_ratio: float) -> "TopK":
        """The original SeerAttention nz_ratio policy: uniform k, last two rows dense, nothing forced."""
        return cls(density=nz_ratio, uniform=True, dense_last_rows=2, sink=0, local=0)

    def count_bound(self, n: int) -> int:
        if self.dense_last_rows:
            return n
        if self.k is not None:
            return int(max(torch.as_tensor(self.k, dtype=torch.float64).reshape(-1)))
        d = float(max(torch.as_tensor(self.density, dtype=torch.float64).reshape(-1)))
        return int((1 - math.sqrt(1 - d)) * n) if self.uniform else int(d * n + 0.5)

    def row_counts(self, scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor) -> Tensor:
        n_selectable = selectable.sum(-1)
        n = scores.shape[-1]
        if self.k is not None:
            count = self.per_head(self.k, scores[..., 0]).floor().expand(scores.shape[:-1])
        elif self.uniform:
            nz = self.per_head(self.density, scores[..., 0])
            count = ((1 - (1 - nz).sqrt()) * n).floor().expand(scores.shape[:-1])
        else:
            count = (self.per_head(self.density, scores[..., 0]) * n_selectable + 0.5).floor()
        if self.dense_last_rows:
            last = torch.arange(n, device=scores.device) >= n - self.dense_last_rows
            count = torch.where(last, float(n), count)
        return count
