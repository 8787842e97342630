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

from seerflex.policies.base import PerHead, Policy, check_range


@dataclass(frozen=True)
class TopK(Policy):
    k: PerHead | None = None
    density: PerHead | None = None
    uniform: bool = False

    name = "topk"

    def __post_init__(self) -> None:
        super().__post_init__()
        if (self.k is None) == (self.density is None):
            raise ValueError("TopK needs exactly one of k (blocks per row) or density (fraction kept)")
        if self.k is not None:
            check_range(self, "k", self.k, 0, math.inf)
            if any(float(x) != int(x) for x in torch.as_tensor(self.k, dtype=torch.float64).reshape(-1).tolist()):
                raise ValueError(f"TopK(k={self.k!r}): k counts blocks per row and must be a whole number; "
                                 f"for a fraction of the blocks use TopK(density={self.k!r})")
        else:
            check_range(self, "density", self.density, 0.0, 1.0)
        if self.uniform and self.density is None:
            raise ValueError("TopK(uniform=True) is the nz_ratio form: give density, not k")

    @classmethod
    def original(cls, nz_ratio: float) -> "TopK":
        """The original SeerAttention nz_ratio policy: uniform k, last two rows dense, nothing forced."""
        return cls(density=nz_ratio, uniform=True, dense_last_rows=2, sink=0, local=0)

    def count_bound(self, n: int, ratio: int = 1) -> int:
        if self.k is not None:
            return int(max(torch.as_tensor(self.k, dtype=torch.float64).reshape(-1)))
        d = float(max(torch.as_tensor(self.density, dtype=torch.float64).reshape(-1)))
        return int((1 - math.sqrt(1 - d)) * n) if self.uniform else int(d * n + 0.5)

    def rule_parameters(self, n: int) -> dict[str, PerHead]:
        """count = floor(per_selectable * selectable blocks + constant)."""
        if self.k is not None:
            per_selectable, constant = 0.0, self.k
        elif self.uniform:
            nz = torch.as_tensor(self.density, dtype=torch.float64)
            per_selectable, constant = 0.0, ((1 - (1 - nz).sqrt()) * n).tolist()
        else:
            per_selectable, constant = self.density, 0.5
        return {"per_selectable": per_selectable, "constant": constant}

    @staticmethod
    def row_counts(scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor,
                   params: dict[str, Tensor]) -> Tensor:
        return (params["per_selectable"] * selectable.sum(-1) + params["constant"]).floor()
