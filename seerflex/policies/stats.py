"""Achieved sparsity: what fraction of the causal block triangle a selection keeps."""

from __future__ import annotations

from dataclasses import dataclass

from torch import Tensor

from seerflex.layout import BlockLayout


@dataclass(frozen=True)
class SparsityStats:
    """Kept and available (causal, real) blocks per sequence and head: [B, H] int64 each."""

    kept_blocks: Tensor
    total_blocks: Tensor

    @classmethod
    def of(cls, kept: Tensor, layout: BlockLayout) -> "SparsityStats":
        available = layout.selectable_blocks(kept.device)
        if layout.valid_q_blocks is not None:  # rows of padding-only query blocks do not count
            available = available & layout.valid_q_blocks[:, None, :, None]
        available = available.expand_as(kept)
        return cls((kept & available).sum((-1, -2)), available.sum((-1, -2)))

    @property
    def density(self) -> Tensor:
        """[H]: kept fraction per head over the batch."""
        return self.kept_blocks.sum(0) / self.total_blocks.sum(0).clamp(min=1)

    @property
    def mean_density(self) -> float:
        return float(self.kept_blocks.sum() / self.total_blocks.sum().clamp(min=1))

    def __add__(self, other: "SparsityStats") -> "SparsityStats":
        """Sum over layers or batches with the same head count."""
        return SparsityStats(self.kept_blocks.sum(0, keepdim=True) + other.kept_blocks.sum(0, keepdim=True),
                             self.total_blocks.sum(0, keepdim=True) + other.total_blocks.sum(0, keepdim=True))

