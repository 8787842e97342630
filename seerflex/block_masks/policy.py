"""Policy base: gate scores -> per-head, per-query-block kept key blocks.

Every policy works the same way, which is why they can be swapped in one line: always-on blocks
(diagonal, ``sink`` first blocks, ``local`` previous blocks) get top priority, the remaining
selectable blocks are ranked by gate score, and the policy only decides *how many* blocks each row
keeps. Counts are clamped to ``[min_blocks, max_blocks]`` (never below the always-on blocks), so no
row is ever empty. Parameters may be a scalar or one value per head (per-head overrides); they
enter the computation as tensors, so swapping or editing a policy never recompiles anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from typing import Any, ClassVar, Sequence, Union

import torch
from torch import Tensor

from seerflex.block_masks.layout import BlockLayout

PerHead = Union[float, Sequence[float]]


@dataclass(frozen=True)
class BlockSelection:
    """Kept blocks: the first ``count`` [B,H,nq] entries of each row of ``order`` [B,H,nq,m].

    ``order`` lists key blocks by priority; it may be cut to the m <= nk blocks a row can ever keep.
    """

    order: Tensor
    count: Tensor
    num_blocks: int

    @property
    def kept(self) -> Tensor:
        """[B, H, nq, nk] bool: block (i, j) is kept."""
        rank = torch.arange(self.order.shape[-1], device=self.order.device)
        in_prefix = rank < self.count[..., None]
        out = torch.zeros(*self.order.shape[:-1], self.num_blocks, dtype=torch.bool, device=self.order.device)
        return out.scatter_(-1, self.order, in_prefix)


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Shared always-on blocks and row bounds; subclasses say how many blocks a row keeps."""

    sink: int = 1
    local: int = 2
    min_blocks: int = 1
    max_blocks: int | None = None

    name: ClassVar[str] = ""

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # per-head lists become tuples: policies stay immutable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        for field in ("sink", "local", "min_blocks"):
            if getattr(self, field) < 0:
                raise ValueError(f"{type(self).__name__}.{field} must be >= 0, got {getattr(self, field)}")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"{type(self).__name__}.max_blocks must be >= 1 or None, got {self.max_blocks}")

    def select(self, scores: Tensor, layout: BlockLayout) -> BlockSelection:
        """Choose blocks from gate scores [B, H, nq, nk] (logits; -inf = not selectable)."""
        n = layout.num_blocks
        if scores.dim() != 4 or scores.shape[-2:] != (n, n):
            raise ValueError(f"scores must be [B, H, {n}, {n}] for this layout, got {tuple(scores.shape)}")
        # masks stay [B or 1, 1, n, n] and broadcast: per-head copies would dominate the cost
        selectable = layout.selectable_blocks(scores.device)
        diagonal = torch.eye(n, dtype=torch.bool, device=scores.device)
        forced = (self.forced_blocks(layout, scores.device) & selectable) | diagonal
        scores = scores.float().masked_fill(~selectable, float("-inf"))
        priority = scores.masked_fill(forced, float("inf"))
        bound = self.max_row_count(n)  # a partial top-k is much cheaper than sorting whole rows
        order = priority.topk(bound, dim=-1).indices if bound < n else priority.argsort(dim=-1, descending=True)
        n_forced = forced.sum(-1)
        n_available = (selectable | forced).sum(-1)
        count = self.row_counts(scores, order, forced, selectable).to(n_forced.dtype)
        count = count.clamp(min=self.min_blocks)
        if self.max_blocks is not None:
            count = count.clamp(max=self.max_blocks)
        count = torch.maximum(count, n_forced).minimum(n_available).clamp(max=bound).expand(scores.shape[:-1])
        return BlockSelection(order, count, n)

    def max_row_count(self, n: int) -> int:
        """An upper bound on any row's count, from the parameters alone (no look at the data)."""
        forced = 1 + self.local + self.sink
        bound = max(self.count_bound(n), forced, self.min_blocks)
        if self.max_blocks is not None:
            bound = min(bound, max(self.max_blocks, forced))
        return min(bound, n)

    def count_bound(self, n: int) -> int:
        """How many blocks the policy's own rule can ask for in a row of ``n`` blocks."""
        return n

    def forced_blocks(self, layout: BlockLayout, device: torch.device) -> Tensor:
        """[B or 1, 1, n, n] bool: diagonal, ``local`` previous blocks and ``sink`` first real blocks.

        ``select`` keeps only the selectable ones (plus the diagonal, which is always kept)."""
        n = layout.num_blocks
        i = torch.arange(n, device=device)[:, None]
        j = torch.arange(n, device=device)[None, :]
        forced = (j <= i) & (j >= i - self.local)
        first = 0 if layout.first_block is None else layout.first_block.view(-1, 1, 1)
        sink = (j >= first) & (j < first + self.sink) & (j <= i)
        return (forced | sink).view(-1, 1, n, n)

    def row_counts(self, scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor) -> Tensor:
        """How many blocks each row keeps, forced ones included ([B, H, nq] or broadcastable).

        ``forced`` and ``selectable`` are [B or 1, 1, n, n] masks that broadcast against ``scores``."""
        raise NotImplementedError

    def per_head(self, value: PerHead, like: Tensor) -> Tensor:
        """A scalar or per-head parameter as a tensor broadcasting against [B, H, nq]."""
        t = torch.as_tensor(value, dtype=torch.float32, device=like.device)
        if t.dim() == 0:
            return t
        if t.shape != (like.shape[1],):
            raise ValueError(f"{type(self).__name__}: per-head parameter has {t.numel()} values, "
                             f"the layer has {like.shape[1]} heads")
        return t.view(1, -1, 1)

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"type": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


def softmax_probs(scores: Tensor) -> Tensor:
    """Softmax over selectable key blocks; rows with nothing selectable give zeros, not NaN."""
    probs = scores.softmax(-1)
    return probs.nan_to_num(0.0)


def check_range(policy: Policy, field: str, value: PerHead, low: float, high: float) -> None:
    """Reject out-of-range policy parameters early, naming the field."""
    t = torch.as_tensor(value, dtype=torch.float64)
    if t.dim() > 1 or not bool(torch.isfinite(t).all()) or bool((t < low).any()) or bool((t > high).any()):
        raise ValueError(f"{type(policy).__name__}.{field} must be a number or per-head list in "
                         f"[{low}, {high}], got {value!r}")
