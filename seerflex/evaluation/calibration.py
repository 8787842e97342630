"""Calibrate threshold / top-p policies to a requested average density.

Top-k sets the density directly; threshold and top-p adapt per row and head, so their parameter is
found by bisection on calibration windows: top-p density rises with p, threshold density falls as
the threshold rises (searched in log space).
"""

from __future__ import annotations

import dataclasses
import math
from typing import Any

import torch

from seerflex.policies import Policy, Threshold, TopP
from seerflex.console import progress, warn
from seerflex.evaluation.selection import achieved_density, selection


def calibrate(model: Any, scorer: str, policy: Policy, target: float, windows: list[torch.Tensor],
              iters: int = 12) -> tuple[Policy, float]:
    """(policy with its parameter set, achieved density on ``windows``) closest to ``target``."""
    if isinstance(policy, TopP):
        field, low, high, to_value = "p", 0.0, 1.0, (lambda x: x)
    elif isinstance(policy, Threshold):  # x = -log10(threshold): larger x, lower threshold, more blocks
        field, low, high, to_value = "threshold", 0.0, 8.0, (lambda x: 10.0 ** -x)
    else:
        raise ValueError(f"only Threshold and TopP need calibration, got {type(policy).__name__}")

    def density_at(x: float) -> tuple[Policy, float]:
        candidate = dataclasses.replace(policy, **{field: to_value(x)})
        with torch.no_grad(), selection(model, scorer, candidate) as records:
            for w in windows:
                model(input_ids=w[None].to(model.device), use_cache=False, logits_to_keep=1)
        return candidate, achieved_density(list(records)) or 1.0

    best: tuple[float, Policy, float] = (math.inf, policy, 1.0)
    with progress() as bar:
        task = bar.add_task(f"calibrating {type(policy).__name__} to density {target}", total=iters, info="")
        for _ in range(iters):
            mid = (low + high) / 2
            candidate, density = density_at(mid)
            best = min(best, (abs(density - target), candidate, density), key=lambda b: b[0])
            low, high = (mid, high) if density < target else (low, mid)
            bar.update(task, advance=1, info=f"density {density:.3f}")
    if abs(best[2] - target) > max(0.02, 0.2 * target):
        floor = density_at(0.0)[1]  # x = 0: p = 0 or threshold = 1, the fewest blocks either policy keeps
        warn(f"{type(policy).__name__} reached density {best[2]:.3f}, not the requested {target}: the always-on "
             f"blocks (diagonal, sink, local, dense last rows) alone keep {floor:.3f} of the blocks at "
             f"{windows[0].numel()} tokens; longer windows or sink/local/dense_last_rows=0 go lower")
    return best[1], best[2]
