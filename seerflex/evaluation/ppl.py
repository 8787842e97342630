"""Perplexity over long windows at every (scorer, policy) pair, with achieved density and time.

Loss counts only tokens after ``prefix``: early tokens see few blocks, so sparsity cannot hurt them
and they would dilute the difference (FIELD_NOTES: windows of 8192, loss over 1024..8191).
"""

from __future__ import annotations

import math
import time
from typing import Any

import torch

from seerflex.console import progress
from seerflex.evaluation.nll import window_nll
from seerflex.evaluation.policy_specs import resolve_policy
from seerflex.evaluation.selection import achieved_density, runs, selection


def evaluate_ppl(model: Any, token_windows: list[torch.Tensor], prefix: int, scorers: list[str],
                 policies: list[str], budget_windows: list[torch.Tensor] | None = None) -> list[dict[str, Any]]:
    """One row per (scorer, policy); ``dense`` once, with no policy.

    Threshold/top-p specs with a density are calibrated on the first window (density only);
    ``budget:`` specs measure layer sensitivity on ``budget_windows`` (other text than the windows
    scored, so the allocation never sees the evaluation text's loss).
    """
    sweep = runs(scorers, policies)
    rows = []
    with progress() as bar:
        task = bar.add_task("perplexity", total=len(sweep) * len(token_windows), info="")
        for scorer, spec in sweep:
            nll, count, seconds, records = 0.0, 0, 0.0, []
            policy, chosen = resolve_policy(model, scorer, spec, token_windows[:1], budget_windows, prefix)
            with selection(model, scorer, policy) as recs:
                for w in token_windows:
                    tic = time.perf_counter()
                    part, n = window_nll(model, w, prefix)
                    seconds += time.perf_counter() - tic
                    nll, count = nll + part, count + n
                    bar.update(task, advance=1, info=f"{scorer} {spec or ''}")
                records = list(recs)
            density = achieved_density(records)
            rows.append({"scorer": scorer, "policy": spec or "-", "calibrated": chosen,
                         "ppl": math.exp(nll / count),
                         "density": 1.0 if density is None else density, "seconds": seconds, "tokens": count})
    return rows
