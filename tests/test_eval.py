"""Evaluation commands end to end on a tiny random Llama and a tiny text: files, finite numbers."""

from __future__ import annotations

import json

import pytest
import torch

from seerflex.evaluation.policy_specs import parse_policy
from seerflex.recipes import eval as eval_recipe


@pytest.mark.slow
def test_eval_ppl_writes_table_json_plot_and_oracle_at_density_one_equals_dense(recipe_model, tiny_text, tmp_path):
    out = tmp_path / "ppl"
    assert eval_recipe.main(["ppl", "--model", "tiny", "--text", str(tiny_text), "--window", "1024", "--prefix", "256",
                             "--windows", "2", "--scorers", "dense,gate,recency,pooled,oracle",
                             "--policies", "topk:0.3,topk:1.0,topp:density=0.5", "--out", str(out)]) == 0
    rows = json.loads((out / "ppl.json").read_text())["rows"]
    assert (out / "ppl_vs_density.png").stat().st_size > 0
    assert all(torch.isfinite(torch.tensor(r["ppl"])) for r in rows)
    dense = next(r["ppl"] for r in rows if r["scorer"] == "dense")
    oracle_full = next(r["ppl"] for r in rows if r["scorer"] == "oracle" and r["policy"] == "topk:1.0")
    assert oracle_full == pytest.approx(dense, rel=1e-5)
    calibrated = next(r for r in rows if r["scorer"] == "pooled" and r["policy"] == "topp:density=0.5")
    assert abs(calibrated["density"] - 0.5) < 0.1 and calibrated["calibrated"]["type"] == "topp"


def test_eval_passkey_grid_per_scorer_and_heatmaps(recipe_model, tmp_path, monkeypatch):
    """A stand-in trial that succeeds when attention is dense, or sparse with the key late in the
    prompt: the grid must put each outcome in its (length, depth) cell, per scorer."""
    def trial(model, tokenizer, length, depth, rng):
        model(input_ids=torch.randint(1, 90, (1, length)), use_cache=False)  # what sparsity is recorded on
        return model._routing.adapter is None or depth > 0.5

    monkeypatch.setattr(eval_recipe, "passkey_trial", trial)
    out = tmp_path / "pk"
    assert eval_recipe.main(["passkey", "--model", "tiny", "--lengths", "640", "704", "--depths", "0.2", "0.8",
                             "--trials", "2", "--scorers", "dense,pooled", "--policies", "topk:0.5",
                             "--out", str(out)]) == 0
    rows = json.loads((out / "passkey.json").read_text())["rows"]
    assert [(r["scorer"], r["grid"], r["accuracy"]) for r in rows] == [
        ("dense", [[1.0, 1.0], [1.0, 1.0]], 1.0), ("pooled", [[0.0, 1.0], [0.0, 1.0]], 0.5)]
    assert rows[0]["density"] == 1.0 and rows[1]["density"] < 1.0
    assert len(list(out.glob("passkey_*.png"))) == 3 and (out / "passkey_vs_density.png").stat().st_size > 0


def test_eval_passkey_calibrates_a_mass_rule_at_every_length(recipe_model, tmp_path, monkeypatch):
    """A mass rule's density moves with length: calibration sees a prompt of each length asked for."""
    seen = []

    def resolve(model, scorer, spec, windows, *rest):
        seen.extend(len(w) for w in windows)
        raise RuntimeError("stop")

    monkeypatch.setattr(eval_recipe, "resolve_policy", resolve)
    with pytest.raises(RuntimeError, match="stop"):
        eval_recipe.main(["passkey", "--model", "tiny", "--lengths", "640", "1280", "--scorers", "pooled",
                          "--policies", "topp:density=0.5", "--out", str(tmp_path / "pk")])
    assert len(seen) == 2 and abs(seen[0] - 640) < 64 and abs(seen[1] - 1280) < 64


def test_per_layer_calibration_gives_every_layer_the_density(monkeypatch):
    """One global parameter lets a mass rule move density between layers; per layer each one meets the target.
    Two stand-in layers whose top-p density is p and p**2 (a broad and a sharp layer)."""
    from types import SimpleNamespace

    from seerflex.evaluation import calibration
    from seerflex.policies import SparsityStats, TopP

    def run(model, scorer, policy, windows):
        p = {i: (policy[i] if isinstance(policy, dict) else policy).p for i in (0, 1)}
        kept = {0: p[0], 1: p[1] ** 2}
        return [(i, SparsityStats(torch.tensor([[round(1000 * kept[i])]]), torch.tensor([[1000]]))) for i in (0, 1)]

    monkeypatch.setattr(calibration, "sparsity_records", run)
    model = SimpleNamespace(gated_layers=[0, 1])
    shared, overall = calibration.calibrate(model, "gate", TopP(0.9), 0.3, [torch.zeros(1)], iters=20)
    spread = calibration.layer_density(run(model, "gate", shared, []))
    assert overall == pytest.approx(0.3, abs=0.01) and spread[0] - spread[1] > 0.2  # the broad layer takes more
    per_layer, overall = calibration.calibrate_per_layer(model, "gate", TopP(0.9), 0.3, [torch.zeros(1)], iters=20)
    each = calibration.layer_density(run(model, "gate", per_layer, []))
    assert overall == pytest.approx(0.3, abs=0.01) and all(abs(d - 0.3) < 0.01 for d in each.values())
    assert per_layer[1].p == pytest.approx(0.3 ** 0.5, abs=0.01)
    # a density per layer (another method's allocation): each layer meets its own
    per_layer, overall = calibration.calibrate_per_layer(model, "gate", TopP(0.9), {0: 0.5, 1: 0.2}, [torch.zeros(1)],
                                                         iters=20)
    each = calibration.layer_density(run(model, "gate", per_layer, []))
    assert each[0] == pytest.approx(0.5, abs=0.01) and each[1] == pytest.approx(0.2, abs=0.01)
    assert overall == pytest.approx(0.35, abs=0.01)
    with pytest.raises(ValueError, match="must name the gated layers"):
        calibration.calibrate_per_layer(model, "gate", TopP(0.9), {0: 0.5}, [torch.zeros(1)])


@pytest.mark.slow
def test_eval_ppl_per_layer_calibration_end_to_end(recipe_model, tiny_text, tmp_path):
    out = tmp_path / "ppl"
    assert eval_recipe.main(["ppl", "--model", "tiny", "--text", str(tiny_text), "--window", "1024", "--prefix", "256",
                             "--windows", "1", "--scorers", "pooled", "--policies", "topp:density=0.5:per_layer=true",
                             "--out", str(out)]) == 0
    row = json.loads((out / "ppl.json").read_text())["rows"][0]
    assert abs(row["density"] - 0.5) < 0.1 and set(row["calibrated"]["per_layer"]) == {"0", "1"}


@pytest.mark.slow
def test_eval_calibrate_saves_per_layer_policies_that_eval_runs(recipe_model, tiny_text, tmp_path):
    saved = tmp_path / "adapter"
    assert eval_recipe.main(["calibrate", "--model", "tiny", "--scorer", "gate", "--policy",
                             "topp:density=0.7:per_layer=true", "--budget-text", str(tiny_text), "--budget-window", "1024",
                             "--save-adapter", str(saved), "--out", str(tmp_path / "c")]) == 0
    rows = json.loads((tmp_path / "c" / "calibrate.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [0, 1] and all(abs(r["density"] - 0.7) < 0.05 for r in rows)
    config = json.loads((saved / "adapter_config.json").read_text())
    assert {int(i): p["p"] for i, p in config["layer_policies"].items()} == {r["layer"]: r["policy"]["p"] for r in rows}
    assert eval_recipe.main(["ppl", "--model", "tiny", "--adapter", str(saved), "--text", str(tiny_text), "--window",
                             "1024", "--prefix", "256", "--windows", "1", "--scorers", "gate", "--policies", "adapter",
                             "--out", str(tmp_path / "p")]) == 0
    row = json.loads((tmp_path / "p" / "ppl.json").read_text())["rows"][0]
    assert abs(row["density"] - 0.7) < 0.1  # calibrated on the same text here; other text lands near it
    with pytest.raises(ValueError, match="no density to calibrate"):
        eval_recipe.main(["calibrate", "--model", "tiny", "--policy", "topp:0.9", "--out", str(tmp_path / "x")])
    # another run's allocation across layers (a sparsity JSON), scaled to the spec's density
    allocation = tmp_path / "sparsity.json"
    allocation.write_text(json.dumps({"rows": [{"layer": 0, "density": 0.9}, {"layer": 1, "density": 0.7}]}))
    assert eval_recipe.main(["calibrate", "--model", "tiny", "--scorer", "gate", "--policy",
                             "topp:density=0.7:per_layer=true", "--allocation", str(allocation), "--budget-text",
                             str(tiny_text), "--budget-window", "1024", "--out", str(tmp_path / "a")]) == 0
    rows = json.loads((tmp_path / "a" / "calibrate.json").read_text())["rows"]
    assert abs(rows[0]["density"] - 0.7875) < 0.05 and abs(rows[1]["density"] - 0.6125) < 0.05
    with pytest.raises(ValueError, match="needs :per_layer=true"):
        eval_recipe.main(["calibrate", "--model", "tiny", "--policy", "topp:density=0.4", "--allocation",
                          str(allocation), "--out", str(tmp_path / "x")])
    allocation.write_text("{not json")
    with pytest.raises(ValueError, match="not a readable"):
        eval_recipe.main(["calibrate", "--model", "tiny", "--policy", "topp:density=0.4:per_layer=true",
                          "--allocation", str(allocation), "--out", str(tmp_path / "x")])


@pytest.mark.parametrize(("spec", "message"), [("bottomk:0.1", "unknown policy"), ("topk:0.1:sinks=2", "bad policy"),
                                               ("topp:density=abc", "not a number"),
                                               ("topp:0.9:per_layer=true", "per_layer calibrates"),
                                               ("topk:density=0.1:per_layer=true", "top-k and budgets set theirs")])
def test_bad_policy_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(spec)


def test_eval_needle_and_sparsity_write_their_files(recipe_model, tiny_text, tmp_path):
    assert eval_recipe.main(["needle", "--model", "tiny", "--lengths", "640", "--depths", "0.5", "--trials", "2",
                             "--scorers", "gate", "--policies", "topk:0.5", "--out", str(tmp_path / "n")]) == 0
    row = json.loads((tmp_path / "n" / "needle.json").read_text())["rows"][0]  # real trials, random model
    assert row["scorer"] == "gate" and len(row["grid"]) == 1 and 0 < row["density"] < 1
    out = tmp_path / "s"
    assert eval_recipe.main(["sparsity", "--model", "tiny", "--text", str(tiny_text), "--window", "1024",
                             "--policy", "topk:0.3", "--layer", "1", "--head", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "sparsity.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [0, 1]
    assert all(0 < r["density"] <= 1 and 0 < r["recall"] <= 1 + 1e-6 and len(r["recall_per_head"]) == 4 for r in rows)
    # the chosen blocks' share of the mass beyond the always-on ones is below the recall that counts those too
    assert all(0 <= r["free_recall"] < r["recall"] and len(r["free_recall_per_head"]) == 4 for r in rows)
    assert all((out / f).stat().st_size > 0 for f in ("density.png", "recall.png", "block_maps.png"))


def test_eval_sparsity_ranks_with_a_training_free_scorer_too(monkeypatch, tiny_text, tmp_path):
    from models import CharTokenizer, SMALL_LLAMA, tiny_model

    # peaked attention (sharp Q/K), so which blocks are kept changes how much mass they cover
    monkeypatch.setattr("seerflex.recipes.eval.load_model",
                        lambda name, dtype=torch.float32: (tiny_model("llama", **SMALL_LLAMA), CharTokenizer()))
    recall = {}
    for scorer in ("gate", "oracle", "recency"):
        assert eval_recipe.main(["sparsity", "--model", "tiny", "--text", str(tiny_text), "--window", "1024",
                                 "--scorer", scorer, "--policy", "topk:0.3", "--out", str(tmp_path / scorer)]) == 0
        recall[scorer] = [r["recall"] for r in json.loads((tmp_path / scorer / "sparsity.json").read_text())["rows"]]
    for other in ("gate", "recency"):  # the true block mass ranks best at an equal number of blocks per row
        assert all(o >= g - 1e-6 for o, g in zip(recall["oracle"], recall[other]))
        assert any(o > g + 1e-3 for o, g in zip(recall["oracle"], recall[other]))
