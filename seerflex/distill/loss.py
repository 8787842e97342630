"""Distillation loss (KL of the gate's block distribution from the ground truth) and gate recall."""

from __future__ import annotations

from typing import Literal

import torch
from torch import Tensor


def gate_kl(logits: Tensor, target: Tensor, *, skip_first_rows: float = 0.25,
            reduction: Literal["mean", "batchmean"] = "mean", row_weights: Tensor | None = None) -> Tensor:
    """KL(target || softmax(logits)) over key blocks, for [B, H, n, n] tensors.

    The original's choices are the defaults: the first quarter of query-block rows is dropped (short
    rows are trivial and would dominate), and the element-wise mean is taken over the remaining
    rows' entries. ``batchmean`` divides the summed KL by the number of (batch, head, row) instead.
    -inf logits (blocks above the diagonal) with zero target contribute exactly 0. ``row_weights``
    ([B, H, n], every row) weighs each row's KL, normalised to mean 1 over the counted rows that have a
    target, so a constant weight changes nothing.
    """
    if reduction not in ("mean", "batchmean"):
        raise ValueError(f"unknown reduction {reduction!r}; choose 'mean' or 'batchmean'")
    first = int(logits.shape[-2] * skip_first_rows)
    logits, target = logits[..., first:, :].float(), target[..., first:, :].float()
    log_q = logits.log_softmax(-1)
    terms = torch.where(target > 0, target * (target.clamp(min=1e-30).log() - log_q), torch.zeros_like(target))
    if row_weights is None:
        total = terms.sum()
    else:
        w = row_weights[..., first:].float()
        real = (target.sum(-1) > 0).float()  # no boolean indexing: no host sync, and compilable
        mean_w = (w * real).sum() / real.sum().clamp(min=1)
        total = (terms.sum(-1) * w).sum() / mean_w.clamp(min=torch.finfo(w.dtype).tiny)
    return total / (terms.numel() if reduction == "mean" else terms[..., 0].numel())


@torch.no_grad()
def gate_recall(kept: Tensor, target: Tensor, skip_first_rows: float = 0.25) -> Tensor:
    """Mean ground-truth mass the kept blocks cover per row (1.0 = nothing important dropped)."""
    first = int(kept.shape[-2] * skip_first_rows)
    return (target[..., first:, :] * kept[..., first:, :]).sum(-1).mean()


def free_blocks_only(logits: Tensor, target: Tensor, always_on: Tensor) -> tuple[Tensor, Tensor]:
    """(logits, target) restricted to the blocks a policy does not keep anyway, the target renormalised per row.

    Why: in late layers the always-on blocks (diagonal, local, sink) hold ~90% of each row's mass, so a KL over
    whole rows spends the gate on blocks that are kept whatever it says; what the gates miss is the rest (their
    "free recall", RESULTS.md). Rows with no free block or no free mass drop out of the loss (logits 0, target 0).
    """
    logits = logits.masked_fill(always_on, float("-inf"))
    logits = logits.masked_fill(~torch.isfinite(logits).any(-1, keepdim=True), 0.0)  # no NaN from an empty row
    free = target.masked_fill(always_on, 0.0)
    return logits, free / free.sum(-1, keepdim=True).clamp(min=1e-30)


@torch.no_grad()
def focus_weights(kept: Tensor, target: Tensor, focus: float) -> Tensor:
    """[B, H, n] row weights 1 + ``focus`` x the target mass the current selection misses in each row.

    Why (a hypothesis under test): a few heads' rows lose most of their mass under the gates but not
    under the oracle (RESULTS.md, Qwen per layer and head), and the KL's plain mean gives those rows no
    more weight than the rest. Re-weighting whole layers cannot help: each layer's gate has its own
    parameters, and AdamW is invariant to a loss's scale per parameter (up to eps); weighting rows
    inside a head moves its optimum.
    """
    return 1.0 + focus * (1.0 - (target * kept).sum(-1)).clamp(min=0.0)
