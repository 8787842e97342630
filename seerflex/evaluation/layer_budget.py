"""Per-layer density budgets: spend an average density where the layers need it.

Layers differ: at top-k 0.1 SmolLM2's layers 0 and 3-8 keep only 0.46-0.63 of the true block mass,
layers 11-19 keep 0.85-0.97 (RESULTS.md), yet a uniform policy gives every layer the same share.
``layer_sensitivity`` makes one layer at a time sparse at each candidate density and measures how
much the loss on calibration text rises (and the density that layer actually reached);
``allocate`` then picks one candidate per layer minimising the summed rise under the budget
(a multiple-choice knapsack, solved exactly by dynamic programming over density steps), the way
mixed-precision quantisers hand out bits. Calibrate on text other than the evaluation text.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import torch

from seerflex.console import progress
from seerflex.evaluation.nll import mean_nll
from seerflex.evaluation.selection import achieved_density
from seerflex.policies import Policy, TopK

CANDIDATES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.5, 1.0)
STEP = 0.002  # density resolution of the knapsack


@dataclasses.dataclass(frozen=True)
class Sensitivity:
    """Loss rise (nats per token) and achieved density, [layers, candidates], one layer sparse at a time."""

    layers: list[int]
    candidates: list[float]
    loss_rise: torch.Tensor
    density: torch.Tensor


def layer_sensitivity(model: Any, scorer: str, windows: list[torch.Tensor], prefix: int,
                      candidates: tuple[float, ...] = CANDIDATES, base: Policy | None = None) -> Sensitivity:
    """Measure every (layer, candidate density) with all other layers dense.

    ``base`` supplies the always-on blocks and bounds (default ``TopK(density=...)``'s): each
    candidate is ``TopK`` at that density with ``base``'s sink/local/min/max settings.
    """
    layers = list(model.gated_layers)

    dense, _ = mean_nll(model, "dense", None, windows, prefix)
    rise = torch.zeros(len(layers), len(candidates), dtype=torch.float64)
    density = torch.ones_like(rise)
    with progress() as bar:
        task = bar.add_task(f"layer sensitivity ({scorer})", total=len(layers) * len(candidates), info="")
        for li, layer in enumerate(layers):
            for ci, d in enumerate(candidates):
                if d < 1.0:  # only this layer sparse, every other one dense
                    nll, records = mean_nll(model, scorer, {layer: topk_like(base, d)}, windows, prefix)
                    rise[li, ci], density[li, ci] = nll - dense, achieved_density(records) or 1.0
                bar.advance(task)
    return Sensitivity(layers, list(candidates), rise, density)


def allocate(sens: Sensitivity, target: float) -> list[int]:
    """Candidate index per layer: least summed loss rise with mean achieved density <= ``target``.

    Density 1 always fits; if even the cheapest candidates exceed the budget, every layer gets its
    cheapest one (the closest reachable density).
    """
    n_layers, _ = sens.density.shape
    cost_t = (sens.density / STEP).round().long()
    budget = int(target * n_layers / STEP + 1e-6)
    if int(cost_t.min(1).values.sum()) > budget:
        return cost_t.argmin(1).tolist()
    cost, rise = cost_t.tolist(), sens.loss_rise.tolist()
    inf = float("inf")
    best = [0.0] + [inf] * budget  # best[c]: least loss rise of the layers so far at total cost c
    choices: list[list[int]] = []
    for li in range(n_layers):
        new, pick = [inf] * (budget + 1), [-1] * (budget + 1)
        for c, value in enumerate(best):
            if value == inf:
                continue
            for ci, (step_cost, step_rise) in enumerate(zip(cost[li], rise[li])):
                total = c + step_cost
                if total <= budget and value + step_rise < new[total]:
                    new[total], pick[total] = value + step_rise, ci
        choices.append(pick)
        best = new
    cost_left = min(range(budget + 1), key=lambda c: best[c])
    picks = []
    for li in reversed(range(n_layers)):  # walk back through the choices that reached the optimum
        picks.append(choices[li][cost_left])
        cost_left -= cost[li][picks[-1]]
    return picks[::-1]


def budget_policies(sens: Sensitivity, target: float, base: Policy | None = None) -> dict[int, Policy]:
    """Per-layer ``TopK`` policies from ``allocate`` (``base``'s sink/local/bounds kept)."""
    picks = allocate(sens, target)
    return {layer: topk_like(base, sens.candidates[ci]) for layer, ci in zip(sens.layers, picks)}


def topk_like(base: Policy | None, density: float) -> TopK:
    """``TopK(density)`` with ``base``'s always-on blocks, dense last rows and row bounds."""
    return TopK(density=density, **({} if base is None else base.base_fields()))
