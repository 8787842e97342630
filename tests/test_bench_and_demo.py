"""bench kernel and the demo run end to end on CPU (tiny shapes, tiny model) and write their JSON."""

from __future__ import annotations

import json

import torch
from transformers import LlamaForCausalLM

from models import small_llama
from seerflex import RuntimeOptions, SeerFlexConfig, get_seerflex_model
from seerflex.recipes import bench_kernel, demo


def test_bench_kernel_on_cpu_checks_and_times(tmp_path):
    out = tmp_path / "k.json"
    assert bench_kernel.main(["--lengths", "256", "--densities", "1.0", "0.3", "--heads", "4", "--kv-heads", "2",
                              "--head-dim", "32", "--dtype", "float32", "--device", "cpu", "--out", str(out)]) == 0
    rows = json.loads(out.read_text())["results"]
    assert [r["method"] for r in rows] == ["sdpa dense", "flex dense", "seerflex", "seerflex"]
    assert all(r["max_rel_err"] < 1e-4 and r["total_ms"] > 0 for r in rows[2:])
    assert bench_kernel.main(["lengths=[300]", "densities=[0.3]", "heads=4", "kv_heads=2", "head_dim=32",
                              "block_size=32", "q_block_size=64", "dtype=float32", "device=cpu", f"out={out}"]) == 0
    row = json.loads(out.read_text())["results"][-1]
    assert (row["q_block_size"], row["block_size"]) == (64, 32) and row["max_rel_err"] < 1e-4
    # vertical columns: the checked selection is the layer's own (with the last queries' columns), timed apart
    assert bench_kernel.main(["lengths=[512]", "densities=[0.2]", "heads=4", "kv_heads=2", "head_dim=32",
                              "block_size=32", "vertical=3", "dtype=float32", "device=cpu", f"out={out}"]) == 0
    row = json.loads(out.read_text())["results"][-1]
    assert row["vertical"] == 3 and row["columns_ms"] > 0 and row["max_rel_err"] < 1e-4


def test_demo_with_bundled_style_adapter(tmp_path, monkeypatch, recipe_model):
    get_seerflex_model(small_llama(), SeerFlexConfig(block_size=32, gate_hidden_size=16)).save_pretrained(
        tmp_path / "gates")
    monkeypatch.setattr(demo, "BUNDLED_GATES", tmp_path / "gates")
    monkeypatch.setattr("seerflex.assets.austen_novels", lambda: {"Emma": "Emma Woodhouse, handsome. " * 200})
    out = tmp_path / "demo"
    assert demo.main(["window=512", "prefix=128", "policies=topk:0.3", "passkey_length=640", "depths=[0.3,0.7]",
                      "compile=eager", f"out={out}"]) == 0
    result = json.loads((out / "demo.json").read_text())
    assert [(r["scorer"], r["policy"]) for r in result["ppl"]] == [
        ("dense", "-"), ("gate", "topk:0.3"), ("recency", "topk:0.3"), ("pooled", "topk:0.3")]
    assert all(r["ppl"] > 0 for r in result["ppl"]) and all(r["density"] < 1 for r in result["ppl"][1:])
    assert [(r["scorer"], r["trials"]) for r in result["passkey"]] == [("dense", 2), ("gate", 2), ("recency", 2),
                                                                       ("pooled", 2)]
    assert result["passkey"][0]["density"] == 1.0 and all(r["density"] < 1 for r in result["passkey"][1:])
    assert (out / "demo_ppl.png").stat().st_size > 0 and (out / "demo_passkey.png").stat().st_size > 0


def test_ttft_attention_free_run_skips_every_attention_layer_and_restores_it():
    """The Amdahl ceiling of bench ttft: with every seerflex layer returning zeros, the logits equal
    those of a model whose attention output projections are zero; afterwards attention is back."""
    from seerflex.recipes.bench_ttft import attention_free

    base = small_llama()
    no_attn = LlamaForCausalLM(base.config).eval()
    no_attn.load_state_dict(base.state_dict())
    for layer in no_attn.model.layers:
        layer.self_attn.o_proj.weight.data.zero_()
    model = get_seerflex_model(base, SeerFlexConfig(block_size=32), runtime=RuntimeOptions(dense_below=0))
    ids = torch.randint(0, 100, (1, 130))
    with torch.no_grad():
        before = model(input_ids=ids).logits
        with attention_free():
            skipped = model(input_ids=ids).logits
        after = model(input_ids=ids).logits
        reference = no_attn(input_ids=ids).logits
    torch.testing.assert_close(skipped, reference)
    assert torch.equal(before, after) and not torch.allclose(before, skipped)
