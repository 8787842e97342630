"""Token windows of a long text and their next-token loss: what perplexity and budgets are measured on."""

from __future__ import annotations

from typing import Any

import torch

from seerflex.evaluation.selection import selection
from seerflex.policies import Policy, SparsityStats


def windows(ids: torch.Tensor, length: int, count: int) -> list[torch.Tensor]:
    """``count`` evenly spaced, non-overlapping windows of ``length`` tokens from a 1-D token stream."""
    if ids.numel() < length:
        raise ValueError(f"the text has {ids.numel()} tokens, fewer than one window of {length}")
    starts = torch.linspace(0, ids.numel() - length, count).long().unique()
    return [ids[s: s + length] for s in starts.tolist()]


@torch.no_grad()
def window_nll(model: Any, window: torch.Tensor, prefix: int) -> tuple[float, int]:
    """Summed next-token NLL over positions ``prefix .. end`` and their count."""
    ids = window[None].to(model.device)
    logits = model(input_ids=ids, use_cache=False, logits_to_keep=ids.shape[1] - prefix + 1).logits[0, :-1].float()
    targets = ids[0, prefix:]
    return float(torch.nn.functional.cross_entropy(logits, targets, reduction="sum")), targets.numel()


def mean_nll(model: Any, scorer: str, policy: Policy | dict[int, Policy] | None, token_windows: list[torch.Tensor],
             prefix: int) -> tuple[float, list[tuple[int, SparsityStats]]]:
    """(mean next-token NLL after ``prefix`` over ``token_windows``, the sparsity records of those same passes)
    with ``scorer`` under ``policy`` (``selection``'s arguments)."""
    nll, count = 0.0, 0
    with selection(model, scorer, policy) as records:
        for w in token_windows:
            part, n = window_nll(model, w, prefix)
            nll, count = nll + part, count + n
        return nll / count, list(records)
