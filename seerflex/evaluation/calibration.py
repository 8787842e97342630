"""Calibrate threshold / top-p policies to a requested average density.

Top-k sets the density directly; threshold and top-p adapt per row and head, so their parameter is
found by bisection on calibration windows: top-p density rises with p, threshold density falls as
the threshold rises (searched in log space).
"""

from __future__ import annotations

import dataclasses
import json
import math
from pathlib import Path
from typing import Any, Callable

import torch

from seerflex.policies import Policy, SparsityStats, Threshold, TopP
from seerflex.console import progress, warn
from seerflex.evaluation.selection import achieved_density, selection


def calibrate(model: Any, scorer: str, policy: Policy, target: float, windows: list[torch.Tensor],
              iters: int = 12) -> tuple[Policy, float]:
    """(policy with its parameter set, achieved density on ``windows``) closest to ``target``."""
    field, low, high, to_value = _search(policy)

    def density_at(x: float) -> tuple[Policy, float]:
        candidate = dataclasses.replace(policy, **{field: to_value(x)})
        return candidate, achieved_density(sparsity_records(model, scorer, candidate, windows)) or 1.0

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


def calibrate_per_layer(model: Any, scorer: str, policy: Policy, target: float | dict[int, float],
                        windows: list[torch.Tensor], iters: int = 12) -> tuple[dict[int, Policy], float]:
    """({layer: policy}, achieved density): each layer's parameter bisected to ``target`` on its own
    (``{layer: density}``: a density per layer, e.g. another method's allocation).

    One parameter for all layers lets a mass rule (threshold, top-p) move density between layers: on SmolLM2
    the gates' calibrated threshold spent 0.148 on layers 3-8, whose attention is broad, and 0.082 on layers
    11-29, which decide perplexity (RESULTS.md). Per layer, the rule still spreads density across heads and
    rows by mass, but every layer gets the same share. All layers are searched at once, one pass per step.
    """
    field, low, high, to_value = _search(policy)
    layers = list(model.gated_layers)
    goal = target if isinstance(target, dict) else dict.fromkeys(layers, target)
    if set(goal) != set(layers):
        raise ValueError(f"per-layer targets must name the gated layers {layers}, got {sorted(goal)}")
    bracket = {i: (low, high) for i in layers}
    best = {i: (math.inf, policy) for i in layers}
    with progress() as bar:
        task = bar.add_task(f"calibrating {type(policy).__name__} per layer to density "
                            f"{target if not isinstance(target, dict) else 'per layer'}", total=iters, info="")
        for _ in range(iters):
            mids = {i: sum(bracket[i]) / 2 for i in layers}
            candidates = {i: dataclasses.replace(policy, **{field: to_value(mids[i])}) for i in layers}
            density = layer_density(sparsity_records(model, scorer, candidates, windows))
            if not density:
                raise ValueError(f"no layer ran sparse on the calibration windows ({windows[0].numel()} tokens): "
                                 "nothing to calibrate (shorter than the runtime's dense_below?)")
            for i in density:  # a layer that never ran sparse keeps the policy as given
                best[i] = min(best[i], (abs(density[i] - goal[i]), candidates[i]), key=lambda b: b[0])
                bracket[i] = (mids[i], bracket[i][1]) if density[i] < goal[i] else (bracket[i][0], mids[i])
            bar.update(task, advance=1, info=f"layers {min(density.values()):.3f}-{max(density.values()):.3f}")
    missed = {i: goal[i] for i in layers if math.isfinite(best[i][0]) and best[i][0] > max(0.02, 0.2 * goal[i])}
    if missed:
        off = ", ".join(f"{i}: {d:.3f} missed by {best[i][0]:.3f}" for i, d in missed.items())
        warn(f"layers did not reach their density ({off}): their always-on blocks or their scores' ties set "
             "a floor or ceiling; they keep their closest setting")
    chosen = {i: best[i][1] for i in layers}
    return chosen, achieved_density(sparsity_records(model, scorer, chosen, windows)) or 1.0


def allocation_targets(path: str, density: float | None = None) -> dict[int, float]:
    """Per-layer densities from a ``seerflex eval sparsity`` JSON, or the achieved ones of an ``eval budget`` JSON
    (whose ``density`` is the nominal top-k candidate: below the always-kept blocks' floor it reaches more), scaled
    to average ``density`` (None: as recorded): another run's allocation across layers (e.g. XAttention's at its
    calibrated threshold on training text) for ``calibrate_per_layer``. On SmolLM2 docs it was the same on training
    and held-out text within 0.006 a layer. Scaled below what it was recorded at, layers at the always-kept floor
    get targets they cannot reach (they stay at the floor)."""
    try:
        rows = json.loads(Path(path).read_text())["rows"]
        found = {int(r["layer"]): float(r.get("achieved", r["density"])) for r in rows}
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ValueError(f"allocation {path!r}: not a readable `seerflex eval sparsity` or `eval budget` JSON "
                         f"({err})") from None
    if not found or not all(math.isfinite(d) and d > 0 for d in found.values()):
        raise ValueError(f"allocation {path!r}: needs a positive density for each layer, got {found}")
    scale = 1.0 if density is None else density / (sum(found.values()) / len(found))
    return {i: min(1.0, d * scale) for i, d in found.items()}


def layer_density(records: list[tuple[int, SparsityStats]]) -> dict[int, float]:
    """Kept fraction of the causal block triangle per layer index."""
    kept: dict[int, float] = {}
    total: dict[int, float] = {}
    for i, s in records:
        if s is not None:
            kept[i] = kept.get(i, 0.0) + float(s.kept_blocks.sum())
            total[i] = total.get(i, 0.0) + float(s.total_blocks.sum())
    return {i: kept[i] / max(1.0, total[i]) for i in kept}


def _search(policy: Policy) -> tuple[str, float, float, Callable[[float], float]]:
    """(field, low, high, x -> value): the bisection's variable; density rises with x for both policies."""
    if isinstance(policy, TopP):
        return "p", 0.0, 1.0, (lambda x: x)
    if isinstance(policy, Threshold):  # x = -log10(threshold): larger x, lower threshold, more blocks
        return "threshold", 0.0, 8.0, (lambda x: 10.0 ** -x)
    raise ValueError(f"only Threshold and TopP need calibration, got {type(policy).__name__}")


def sparsity_records(model: Any, scorer: str, policy: Policy | dict[int, Policy], windows: list[torch.Tensor]
                     ) -> list[tuple[int, SparsityStats]]:
    """The sparsity records of ``windows`` under ``policy`` (forward only, last logit)."""
    with torch.no_grad(), selection(model, scorer, policy) as records:
        for w in windows:
            model(input_ids=w[None].to(model.device), use_cache=False, logits_to_keep=1)
        return list(records)
