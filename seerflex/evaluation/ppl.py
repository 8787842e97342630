"""Perplexity over long windows at every (scorer, policy) pair, with achieved density and time.

Loss counts only tokens after ``prefix``: early tokens see few blocks, so sparsity cannot hurt them
and they would dilute the difference (FIELD_NOTES: windows of 8192, loss over 1024..8191).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch
from rich.progress import Progress

from seerflex.evaluation.calibration import calibrate
from seerflex.evaluation.selection import achieved_density, parse_policy, runs, selection
from seerflex.recipes.common import console


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


def evaluate_ppl(model: Any, token_windows: list[torch.Tensor], prefix: int, scorers: list[str],
                 policies: list[str]) -> list[dict[str, Any]]:
    """One row per (scorer, policy); ``dense`` once, with no policy."""
    sweep = runs(scorers, policies)
    rows = []
    with Progress(console=console, transient=True) as progress:
        task = progress.add_task("perplexity", total=len(sweep) * len(token_windows))
        for scorer, spec in sweep:
            nll, count, seconds, records = 0.0, 0, 0.0, []
            policy, target = (None, None) if spec is None else parse_policy(spec)
            if target is not None:  # threshold/top-p at a requested density: calibrate on the first window
                policy, _ = calibrate(model, scorer, policy, target, token_windows[:1])
            with selection(model, scorer, policy) as recs:
                for w in token_windows:
                    tic = time.perf_counter()
                    part, n = window_nll(model, w, prefix)
                    seconds += time.perf_counter() - tic
                    nll, count = nll + part, count + n
                    progress.advance(task)
                records = list(recs)
            density = achieved_density(records)
            rows.append({"scorer": scorer, "policy": spec or "-", "calibrated": None if target is None else policy.to_dict(),
                         "ppl": math.exp(nll / count),
                         "density": 1.0 if density is None else density, "seconds": seconds, "tokens": count})
    return rows
