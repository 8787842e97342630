"""Per-layer budgets: the knapsack is exact, specs and the adapter round trip work end to end."""

from __future__ import annotations

import itertools
import json

import pytest
import torch

from seerflex.evaluation.layer_budget import STEP, Sensitivity, allocate
from seerflex.recipes import eval as eval_recipe


def brute_force(sens: Sensitivity, target: float) -> float:
    best = float("inf")
    for picks in itertools.product(range(len(sens.candidates)), repeat=len(sens.layers)):
        density = sum(round(float(sens.density[i, c]) / STEP) for i, c in enumerate(picks))
        if density <= int(target * len(sens.layers) / STEP + 1e-6):
            best = min(best, sum(float(sens.loss_rise[i, c]) for i, c in enumerate(picks)))
    return best


def test_allocate_is_the_exact_optimum_under_the_budget():
    torch.manual_seed(0)
    for _ in range(5):
        layers, cands = 4, [0.05, 0.1, 0.3, 1.0]
        density = torch.tensor(cands, dtype=torch.float64).expand(layers, -1) + 0.01 * torch.rand(layers, len(cands))
        density[:, -1] = 1.0
        rise = torch.rand(layers, 1, dtype=torch.float64) * torch.tensor([1.0, 0.6, 0.2, 0.0])  # falls with density
        sens = Sensitivity(list(range(layers)), cands, rise, density)
        picks = allocate(sens, 0.2)
        assert sum(float(density[i, c]) for i, c in enumerate(picks)) <= 0.2 * layers + STEP * layers
        got = sum(float(rise[i, c]) for i, c in enumerate(picks))
        assert abs(got - brute_force(sens, 0.2)) < 1e-9


def test_allocate_gives_sensitive_layers_more():
    cands = [0.1, 0.5, 1.0]
    density = torch.tensor([cands, cands], dtype=torch.float64)
    rise = torch.tensor([[1.0, 0.1, 0.0], [0.01, 0.0, 0.0]], dtype=torch.float64)
    assert allocate(Sensitivity([0, 1], cands, rise, density), 0.3) == [1, 0]
    assert allocate(Sensitivity([0, 1], cands, rise, density), 0.01) == [0, 0]  # unreachable: cheapest


@pytest.mark.slow
def test_budget_spec_in_eval_ppl_and_saved_adapter(recipe_model, tiny_text, tmp_path):
    out = tmp_path / "ppl"
    assert eval_recipe.main(["ppl", "--model", "tiny", "--text", str(tiny_text), "--window", "1024", "--prefix", "256",
                             "--windows", "1", "--scorers", "pooled", "--policies", "budget:0.6,topk:0.6",
                             "--budget-text", str(tiny_text), "--budget-window", "1024", "--budget-prefix", "256",
                             "--out", str(out)]) == 0
    budget, uniform = json.loads((out / "ppl.json").read_text())["rows"]
    assert set(budget["calibrated"]["layer_density"]) == {"0", "1"}
    assert budget["density"] <= 0.6 + 1e-6 and torch.isfinite(torch.tensor(budget["ppl"]))
    saved = tmp_path / "adapter"
    assert eval_recipe.main(["budget", "--model", "tiny", "--density", "0.4", "--budget-text", str(tiny_text),
                             "--budget-window", "512", "--budget-prefix", "128", "--save-adapter", str(saved),
                             "--out", str(tmp_path / "b")]) == 0
    budget_file = json.loads((tmp_path / "b" / "budget.json").read_text())
    rows = budget_file["rows"]
    assert budget_file["predicted_loss_rise"] == pytest.approx(sum(r["loss_rise"] for r in rows))
    config = json.loads((saved / "adapter_config.json").read_text())
    assert {int(i): p["density"] for i, p in config["layer_policies"].items()} == {r["layer"]: r["density"] for r in rows}
    assert (tmp_path / "b" / "layer_sensitivity.png").stat().st_size > 0
    assert eval_recipe.main(["ppl", "--model", "tiny", "--adapter", str(saved), "--text", str(tiny_text), "--window", "1024",
                             "--prefix", "256", "--windows", "1", "--scorers", "gate", "--policies", "adapter",
                             "--out", str(tmp_path / "p2")]) == 0
    row = json.loads((tmp_path / "p2" / "ppl.json").read_text())["rows"][0]
    assert row["policy"] == "adapter" and 0 < row["density"] <= 1


def test_an_allocation_from_a_budget_reads_the_densities_its_layers_reached(tmp_path):
    """A budget's ``density`` is the nominal top-k candidate; below the always-kept blocks a layer reaches more
    (SmolLM2 at 8k: 0.02 -> 0.076). The allocation handed to calibration is what the layers reached, so scaling
    it to an average does not inflate every layer by the floor's share (the H200 run that read the nominal
    values averaged 0.118 instead of 0.1)."""
    from seerflex.evaluation.calibration import allocation_targets

    rows = [{"layer": 0, "density": 0.02, "achieved": 0.076}, {"layer": 1, "density": 0.15, "achieved": 0.124}]
    budget = tmp_path / "budget.json"
    budget.write_text(json.dumps({"rows": rows}))
    assert allocation_targets(str(budget)) == pytest.approx({0: 0.076, 1: 0.124})
    assert allocation_targets(str(budget), 0.05) == pytest.approx({0: 0.038, 1: 0.062})
    sparsity = tmp_path / "sparsity.json"  # eval sparsity rows carry the reached density as ``density``
    sparsity.write_text(json.dumps({"rows": [{"layer": 3, "density": 0.2}]}))
    assert allocation_targets(str(sparsity), 0.1) == pytest.approx({3: 0.1})
