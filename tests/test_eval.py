"""Evaluation commands end to end on a tiny random Llama and a tiny text: files, finite numbers."""

from __future__ import annotations

import json

import pytest
import torch
from transformers import LlamaConfig, LlamaForCausalLM

from seerflex.evaluation.selection import parse_policy
from seerflex.recipes import eval as eval_recipe


class CharTokenizer:
    eos_token_id = 0

    def __call__(self, text, add_special_tokens=False):
        return {"input_ids": [1 + ord(c) % 90 for c in text]}

    def decode(self, ids):
        return "".join(chr(48 + (int(i) - 1) % 10) if int(i) else "" for i in ids)


@pytest.fixture
def tiny(monkeypatch, tmp_path):
    def load_model(name, dtype):
        torch.manual_seed(0)
        cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                          num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
        return LlamaForCausalLM(cfg).eval(), CharTokenizer()

    monkeypatch.setattr("seerflex.distill.recipe.load_model", load_model)
    text = tmp_path / "book.txt"
    text.write_text("".join(f"Sentence {i} of a small test book. " for i in range(80)))
    return text


def test_eval_ppl_writes_table_json_plot_and_oracle_at_density_one_equals_dense(tiny, tmp_path):
    out = tmp_path / "ppl"
    assert eval_recipe.main(["ppl", "--model", "tiny", "--text", str(tiny), "--window", "1024", "--prefix", "256",
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


def test_eval_passkey_writes_heatmaps(tiny, tmp_path):
    out = tmp_path / "pk"
    assert eval_recipe.main(["passkey", "--model", "tiny", "--lengths", "200", "--depths", "0.2", "0.8", "--trials",
                             "1", "--scorers", "dense,pooled", "--policies", "topk:0.5", "--out", str(out)]) == 0
    rows = json.loads((out / "passkey.json").read_text())["rows"]
    assert [r["scorer"] for r in rows] == ["dense", "pooled"]
    assert all(0 <= r["accuracy"] <= 1 and len(r["grid"][0]) == 2 for r in rows)
    assert len(list(out.glob("passkey_*.png"))) == 3 and (out / "passkey_vs_density.png").stat().st_size > 0


@pytest.mark.parametrize(("spec", "message"), [("bottomk:0.1", "unknown policy"), ("topk:0.1:sinks=2", "bad policy")])
def test_bad_policy_specs_are_named(spec, message):
    with pytest.raises(ValueError, match=message):
        parse_policy(spec)


def test_eval_needle_and_sparsity_write_their_files(tiny, tmp_path):
    assert eval_recipe.main(["needle", "--model", "tiny", "--lengths", "200", "--depths", "0.5", "--trials", "2",
                             "--scorers", "gate", "--policies", "topk:0.5", "--out", str(tmp_path / "n")]) == 0
    assert json.loads((tmp_path / "n" / "needle.json").read_text())["rows"][0]["grid"][0][0] in (0.0, 0.5, 1.0)
    out = tmp_path / "s"
    assert eval_recipe.main(["sparsity", "--model", "tiny", "--text", str(tiny), "--window", "1024",
                             "--policy", "topk:0.3", "--layer", "1", "--head", "2", "--out", str(out)]) == 0
    rows = json.loads((out / "sparsity.json").read_text())["rows"]
    assert [r["layer"] for r in rows] == [0, 1]
    assert all(0 < r["density"] <= 1 and 0 < r["recall"] <= 1 + 1e-6 and len(r["recall_per_head"]) == 4 for r in rows)
    assert all((out / f).stat().st_size > 0 for f in ("density.png", "recall.png", "block_maps.png"))
