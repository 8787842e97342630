"""Policy base: gate scores -> per-head, per-query-block kept key blocks.

Every policy works the same way, which is why they can be swapped in one line: always-on blocks
(diagonal, ``sink`` first blocks, ``local`` previous blocks) get top priority, the remaining
selectable blocks are ranked by gate score, and the policy only decides *how many* blocks each row
keeps. Counts are clamped to ``[min_blocks, max_blocks]`` (never below the always-on blocks), so no
row is ever empty. The last ``dense_last_rows`` query-block rows keep every block: the prompt's last
position produces the first generated token, and sparsifying it broke retrieval (passkey at 8k,
density ~0.1: 3-8/15 without, 15/15 with one dense row; RESULTS.md). ``vertical`` key blocks, those
ranked highest in the last (real) query-block row, are always-on in every row too: MInference's vertical
lines, so the blocks the question at the prompt's end needs stay reachable by the rows in between
(variable tracking, multi-hop retrieval). The attention layer writes the last 64 queries' exact attention
into that row first (``seerflex.last_queries``). Parameters may be a scalar or one value per head
(per-head overrides); they enter the computation as tensors, so swapping or editing a policy never
recompiles anything.
"""

from __future__ import annotations

import dataclasses
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, Callable, ClassVar, Sequence, Union

import torch
from torch import Tensor

from seerflex.compile import compiled
from seerflex.layout import BlockLayout, block_grid, selectable_blocks

PerHead = Union[float, Sequence[float]]


@dataclass(frozen=True)
class BlockSelection:
    """Kept blocks: the first ``count`` [B,H,nq] entries of each row of ``order`` [B,H,nq,m], and in the
    last L rows every block marked in ``dense_tail`` [B or 1, 1, L, nk].

    ``order`` lists key blocks by priority, cut to the m <= nk blocks a sparse row can keep; the dense
    last rows keep everything and need no order, so they never widen it to nk (an int64 order of
    [32, 2048, 2048] is 1 GB at 128k).
    """

    order: Tensor
    count: Tensor
    num_blocks: int
    dense_tail: Tensor | None = None

    @property
    def dense_rows(self) -> int:
        return 0 if self.dense_tail is None else self.dense_tail.shape[-2]

    @property
    def kept(self) -> Tensor:
        """[B, H, nq, nk] bool: block (i, j) is kept."""
        rank = torch.arange(self.order.shape[-1], device=self.order.device)
        in_prefix = rank < self.count[..., None]
        out = torch.zeros(*self.order.shape[:-1], self.num_blocks, dtype=torch.bool, device=self.order.device)
        out.scatter_(-1, self.order, in_prefix)
        if self.dense_rows:
            out[..., out.shape[-2] - self.dense_rows:, :] |= self.dense_tail
        return out


@dataclass(frozen=True, kw_only=True)
class Policy:
    """Shared always-on blocks and row bounds; subclasses say how many blocks a row keeps."""

    sink: int = 1
    local: int = 2
    min_blocks: int = 1
    max_blocks: int | None = None
    dense_last_rows: int = 1
    vertical: int = 0

    name: ClassVar[str] = ""
    # keys of the priority top-k: float16 needs half the radix passes of float32 (H200, 32 heads: 0.25 -> 0.16 ms
    # at 32k, 2.0 -> 1.2 ms at 128k, 128 x 64 blocks; benchmarks/results/2026-12-01_h200_perf_select.json);
    # scores closer than its resolution (~1e-3 relative) may swap places
    rank_dtype: ClassVar[torch.dtype] = torch.float16

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):  # per-head lists become tuples: policies stay immutable
            if isinstance(getattr(self, f.name), list):
                object.__setattr__(self, f.name, tuple(getattr(self, f.name)))
        for field in ("sink", "local", "min_blocks", "dense_last_rows", "vertical"):
            if getattr(self, field) < 0:
                raise ValueError(f"{type(self).__name__}.{field} must be >= 0, got {getattr(self, field)}")
        if self.max_blocks is not None and self.max_blocks < 1:
            raise ValueError(f"{type(self).__name__}.max_blocks must be >= 1 or None, got {self.max_blocks}")

    def select(self, scores: Tensor, layout: BlockLayout, *, compile: str = "auto") -> BlockSelection:
        """Choose blocks from gate scores [B, H, nq, nk] (logits; -inf = not selectable).

        The returned order starts with the diagonal group in every row, then the other always-on
        blocks, then blocks by score. Compiled (``seerflex.compile``), the selection is one graph:
        ~40 small launches become a few fused kernels plus the top-k.
        """
        nq, nk = layout.shape
        if scores.dim() != 4 or scores.shape[-2:] != (nq, nk):
            raise ValueError(f"scores must be [B, H, {nq}, {nk}] for this layout, got {tuple(scores.shape)}")
        args = self.select_args(layout, scores.shape[1], scores.device)
        core = compiled(select_blocks, compile, scores.device)
        order, count, tail = core(args[0], scores, layout.valid_blocks, layout.first_block, *args[1:])
        return BlockSelection(order, count, nk, tail)

    def always_on(self, layout: BlockLayout, device: torch.device) -> Tensor:
        """[B or 1, 1, nq, nk] bool: the blocks kept whatever the scores (diagonal group, sink, local, and every
        available block of the last ``dense_last_rows`` rows)."""
        (nq, nk), ratio = layout.shape, layout.ratio
        forced, selectable, diagonal = always_on_blocks(nq, nk, ratio, layout.valid_blocks, layout.first_block,
                                                        self.sink, self.local, device)
        last = (torch.arange(nq, device=device) >= nq - min(self.dense_last_rows, nq))[:, None]
        return forced | ((selectable | diagonal) & last)

    def select_args(self, layout: BlockLayout, heads: int, device: torch.device
                    ) -> tuple[Callable[..., Tensor], dict[str, Tensor], int, int, int, torch.dtype]:
        """What ``select_blocks`` takes besides the scores and padding: (row rule, parameter tensors, order
        width, dense rows, key blocks per query block, ranking dtype)."""
        (nq, nk), r = layout.shape, layout.ratio
        return (type(self).row_counts, policy_tensors(self, nk, heads, device), self.max_row_count(nk, r),
                min(self.dense_last_rows, nq), r, self.rank_dtype)

    def max_row_count(self, n: int, ratio: int = 1) -> int:
        """An upper bound on any sparse row's count of ``n`` key blocks, from the parameters alone (no look
        at the data); ``ratio`` key blocks per query block are its diagonal group."""
        forced = ratio + self.local + self.sink + self.vertical
        bound = max(self.count_bound(n, ratio), forced, self.min_blocks)
        if self.max_blocks is not None:
            bound = min(bound, max(self.max_blocks, forced))
        return min(bound, n)

    def count_bound(self, n: int, ratio: int = 1) -> int:
        """How many blocks the policy's own rule can ask for in a row of ``n`` blocks (diagonal group of ``ratio``)."""
        return n

    @staticmethod
    def row_counts(scores: Tensor, order: Tensor, forced: Tensor, selectable: Tensor,
                   params: dict[str, Tensor]) -> Tensor:
        """How many blocks each row keeps, forced ones included ([B, H, nq] or broadcastable).

        Pure tensor code (it is compiled): ``forced`` and ``selectable`` are [B or 1, 1 or H, nq, nk]
        masks (``forced`` per head with ``vertical`` columns), ``params`` holds ``rule_parameters`` as [1, H, 1]
        float32 tensors."""
        raise NotImplementedError

    def rule_parameters(self, n: int) -> dict[str, PerHead]:
        """The numbers ``row_counts`` needs for rows of ``n`` blocks: scalars or per-head lists."""
        raise NotImplementedError

    def per_head(self, value: PerHead, heads: int) -> Tensor:
        """A scalar or per-head parameter as a [1, H, 1] float32 tensor (on the CPU)."""
        t = torch.as_tensor(value, dtype=torch.float32)
        if t.dim() == 0:
            return t.expand(heads).reshape(1, heads, 1)
        if t.shape != (heads,):
            raise ValueError(f"{type(self).__name__}: per-head parameter has {t.numel()} values, "
                             f"the layer has {heads} heads")
        return t.view(1, heads, 1)

    def base_fields(self) -> dict[str, Any]:
        """The always-on blocks and row bounds every policy shares (to build another policy alike)."""
        return {f.name: getattr(self, f.name) for f in dataclasses.fields(Policy)}

    def to_dict(self) -> dict[str, Any]:
        fields = {f.name: getattr(self, f.name) for f in dataclasses.fields(self)}
        return {"type": self.name, **{k: list(v) if isinstance(v, tuple) else v for k, v in fields.items()}}


@lru_cache(maxsize=512)
def policy_tensors(policy: Policy, n: int, heads: int, device: torch.device) -> dict[str, Tensor]:
    """A policy's parameters as device tensors, made once per (policy, n, heads, device).

    Policies are immutable and hashable, so the host-to-device copies (each one a stream sync)
    happen once, not once per layer, and new values never change a compiled graph.
    """
    shared = {"sink": policy.sink, "local": policy.local, "min_blocks": policy.min_blocks,
              "max_blocks": n if policy.max_blocks is None else policy.max_blocks}
    if policy.vertical:  # its presence is static in a compiled graph: no per-head mask when it is off
        shared["vertical"] = policy.vertical
    tensors = {name: torch.tensor(float(value)) for name, value in shared.items()}
    tensors |= {name: policy.per_head(value, heads) for name, value in policy.rule_parameters(n).items()}
    return {name: t.to(device) for name, t in tensors.items()}


def select_blocks(row_counts: Callable[..., Tensor], scores: Tensor, valid_blocks: Tensor | None,
                  first_block: Tensor | None, params: dict[str, Tensor], bound: int,
                  dense_rows: int = 0, ratio: int = 1, rank_dtype: torch.dtype = torch.float32
                  ) -> tuple[Tensor, Tensor, Tensor]:
    """(order [B, H, nq, bound] int64, count [B, H, nq], dense tail [B or 1, 1, dense_rows, nk] bool):
    the selection as pure tensor code (``ratio`` key blocks per query block).

    Priorities (in ``rank_dtype``): the diagonal group +inf (so it is always first), other always-on
    blocks the largest finite value, selectable blocks their score, the rest -inf; a partial top-k of
    ``bound`` columns is much cheaper than sorting whole rows. The last ``dense_rows`` rows keep every
    available block.
    """
    nq, nk = scores.shape[-2:]
    i = torch.arange(nq, device=scores.device)[:, None]
    forced, selectable, diagonal = always_on_blocks(nq, nk, ratio, valid_blocks, first_block, params["sink"],
                                                    params["local"], scores.device)
    scores = scores.float().masked_fill(~selectable, float("-inf"))
    if "vertical" in params:
        columns = vertical_columns(scores, forced, valid_blocks, params["vertical"], ratio)
        forced = forced | (columns[:, :, None] & selectable)
    top = torch.finfo(rank_dtype).max
    # clamped into rank_dtype's range, so only blocks that may not be chosen rank -inf (a -inf or huge negative
    # score of a causal block stays finite and above them), forced blocks the largest finite value, the diagonal +inf
    priority = scores.clamp(-top / 2, top / 2).to(rank_dtype).masked_fill(~selectable, float("-inf"))
    priority = priority.masked_fill(forced, top).masked_fill(diagonal, float("inf"))
    order = priority.topk(bound, dim=-1).indices if bound < nk else priority.argsort(dim=-1, descending=True)
    n_forced = forced.sum(-1)
    n_available = (selectable | forced).sum(-1)
    count = row_counts(scores, order, forced, selectable, params).float()
    count = count.maximum(params["min_blocks"]).minimum(params["max_blocks"])
    count = count.maximum(n_forced.float()).minimum(n_available.float()).clamp(max=bound)
    count = torch.where(i[:, 0] >= nq - dense_rows, n_available.float(), count)
    return order, count.long().expand(scores.shape[:-1]), (selectable | diagonal)[..., nq - dense_rows:, :]


def always_on_blocks(nq: int, nk: int, ratio: int, valid_blocks: Tensor | None, first_block: Tensor | None,
                     sink: Tensor | int, local: Tensor | int, device: torch.device) -> tuple[Tensor, Tensor, Tensor]:
    """(always-on, selectable, diagonal) [B or 1, 1, nq, nk] bool masks: the diagonal group, the ``sink`` first real
    blocks and the ``local`` blocks before the diagonal, which every policy keeps whatever the scores say.

    Masks stay [B or 1, 1, nq, nk] and broadcast: per-head copies would dominate the selection's cost (only
    ``vertical``, per head by nature, makes the forced set [B, H, nq, nk])."""
    i, group = block_grid(nq, nk, ratio, device)
    j = torch.arange(nk, device=device)[None, :]
    diagonal = group == i
    selectable = selectable_blocks(nq, nk, ratio, valid_blocks, device)
    first = 0 if first_block is None else first_block.view(-1, 1, 1, 1)
    sink_blocks = (j >= first) & (j < first + sink)
    return (((j >= i * ratio - local) | sink_blocks) & selectable) | diagonal, selectable, diagonal


def vertical_columns(scores: Tensor, forced: Tensor, valid_blocks: Tensor | None, vertical: Tensor,
                     ratio: int) -> Tensor:
    """[B, H, nk] bool: the ``vertical`` key blocks each head's last real query-block row ranks highest among
    those it does not force anyway (``scores`` already -inf where a block may not be chosen)."""
    nq, nk = scores.shape[-2:]
    b, h = scores.shape[:2]
    row = torch.full((b,), nq - 1, device=scores.device) if valid_blocks is None \
        else (nk - 1 - valid_blocks.int().flip(-1).argmax(-1)) // ratio  # right padding: the last real block
    index = row.view(-1, 1, 1, 1).expand(b, h, 1, nk)
    last = scores.gather(2, index).masked_fill(forced.expand(b, h, nq, nk).gather(2, index), float("-inf"))[:, :, 0]
    rank = last.argsort(-1, descending=True).argsort(-1)
    return (rank < vertical) & (last > float("-inf"))


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
