"""A sweep entry's policy spec -> the policy it runs, calibrating where the spec asks for it.

* ``None`` / ``adapter``: every layer keeps its own policy (e.g. an adapter saved with a budget);
* ``topk:0.1``, ``threshold:2e-3``, ``topp:0.9`` (the spec strings of ``seerflex.policies``);
* ``threshold:density=0.1`` / ``topp:density=0.1``: parameter bisected to that average density;
  ``:per_layer=true``: bisected in every layer to that density (the mass rule spends within a layer only);
* ``budget:0.1[:sink=N:local=N]``: per-layer top-k densities averaging 0.1, allocated by measured
  layer sensitivity (``seerflex.evaluation.layer_budget``).
"""

from __future__ import annotations

from typing import Any

import torch

from seerflex.policies import Policy, TopK, policy_from_dict, spec_fields
from seerflex.evaluation.calibration import calibrate, calibrate_per_layer
from seerflex.evaluation.layer_budget import budget_policies, layer_sensitivity

BUDGET = "budget:"


def parse_policy(spec: str) -> tuple[Policy, float | None]:
    """(policy, density to calibrate its parameter to, or None): ``threshold:density=0.1`` and
    ``topp:density=0.1`` ask for calibration (``:per_layer=true``: in each layer on its own); everything else
    is a plain policy spec."""
    kind, fields = spec_fields(spec)
    target = fields.pop("density") if kind != "topk" and "density" in fields else None
    if fields.pop("per_layer", False) and target is None:
        raise ValueError(f"bad policy spec {spec!r}: per_layer calibrates a threshold or top-p to a density in each "
                         "layer (top-k and budgets set theirs directly), e.g. topp:density=0.1:per_layer=true")
    try:
        return policy_from_dict({"type": kind, **fields}), target
    except ValueError as err:
        raise ValueError(f"bad policy spec {spec!r}: {err}") from None


def spec_policy(spec: str) -> Policy:
    """The policy a spec runs before any calibration (a budget as the top-k whose sink, local and bounds every layer
    keeps)."""
    return parse_policy("topk:" + spec[len(BUDGET):] if spec.startswith(BUDGET) else spec)[0]


def resolve_policy(model: Any, scorer: str, spec: str | None, density_windows: list[torch.Tensor],
                   budget_windows: list[torch.Tensor] | None, prefix: int,
                   layer_targets: dict[int, float] | None = None
                   ) -> tuple[Policy | dict[int, Policy] | None, dict[str, Any] | None]:
    """(policy for ``selection``, what calibration chose or None).

    ``density_windows`` calibrate threshold/top-p densities; ``budget_windows`` (other text than the
    evaluation's) feed the layer sensitivity of ``budget:`` specs. ``layer_targets``: a ``:per_layer=true``
    spec calibrates each layer to its own density instead of the spec's (``calibration.allocation_targets``).
    """
    if spec is None or spec == "adapter":
        return None, None
    if spec.startswith(BUDGET):
        base = spec_policy(spec)
        if not isinstance(base, TopK) or base.density is None or not isinstance(base.density, float):
            raise ValueError(f"{spec!r}: a budget is one average density, e.g. budget:0.1 or budget:0.1:local=1")
        if not budget_windows:
            raise ValueError(f"{spec!r} needs calibration text for the layer sensitivity (--budget-text)")
        sens = layer_sensitivity(model, scorer, budget_windows, prefix, base=base)
        policies = budget_policies(sens, base.density, base)
        return policies, {"layer_density": {i: p.density for i, p in policies.items()},
                          "candidates": sens.candidates, "loss_rise": sens.loss_rise.tolist(),
                          "achieved": sens.density.tolist()}
    policy, target = parse_policy(spec)
    if target is None:
        return policy, None
    if spec_fields(spec)[1].get("per_layer", False):
        goal = target if layer_targets is None else layer_targets
        policies, _ = calibrate_per_layer(model, scorer, policy, goal, density_windows)
        return policies, {"per_layer": {i: p.to_dict() for i, p in policies.items()}}
    if layer_targets is not None:
        raise ValueError(f"per-layer densities need a :per_layer=true spec, got {spec!r}")
    policy, _ = calibrate(model, scorer, policy, target, density_windows)
    return policy, policy.to_dict()
