"""bench kernel and the demo run end to end on CPU (tiny shapes, tiny model) and write their JSON."""

from __future__ import annotations

import json

import torch
from transformers import LlamaConfig, LlamaForCausalLM

from seerflex import SeerFlexConfig, get_seerflex_model
from seerflex.recipes import bench_kernel, demo
from test_eval import CharTokenizer


def test_bench_kernel_on_cpu_checks_and_times(tmp_path):
    out = tmp_path / "k.json"
    assert bench_kernel.main(["--lengths", "256", "--densities", "1.0", "0.3", "--heads", "4", "--kv-heads", "2",
                              "--head-dim", "32", "--dtype", "float32", "--device", "cpu", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows] == ["sdpa dense", "flex dense", "seerflex", "seerflex"]
    assert all(r["max_rel_err"] < 1e-4 and r["total_ms"] > 0 for r in rows[2:])


def test_demo_with_bundled_style_adapter(tmp_path, monkeypatch):
    torch.manual_seed(0)
    cfg = LlamaConfig(vocab_size=100, hidden_size=64, intermediate_size=128, num_hidden_layers=2,
                      num_attention_heads=4, num_key_value_heads=2, head_dim=16, max_position_embeddings=2048)
    get_seerflex_model(LlamaForCausalLM(cfg), SeerFlexConfig(block_size=32, gate_hidden_size=16)).save_pretrained(
        tmp_path / "gates")
    monkeypatch.setattr(demo, "BUNDLED_GATES", tmp_path / "gates")
    monkeypatch.setattr("seerflex.assets.load_smollm2", lambda: (LlamaForCausalLM(cfg).eval(), CharTokenizer()))
    monkeypatch.setattr("seerflex.assets.austen_novels", lambda: {"Emma": "Emma Woodhouse, handsome. " * 200})
    out = tmp_path / "demo.json"
    assert demo.main(["--window", "512", "--prefix", "128", "--policies", "topk:0.3", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["rows"]
    assert [r["scorer"] for r in rows] == ["dense", "learned gates", "pooled Q.K (no training)"]
    assert all(r["ppl"] > 0 for r in rows) and rows[1]["density"] < 1
