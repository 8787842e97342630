"""Fine-tuning with gates in the loop on a tiny random Llama: context extension, what trains, exact resume,
export, and the errors a user can make."""

from __future__ import annotations

import copy
import json

import pytest
import torch
from safetensors.torch import load_file
from transformers import AutoModelForCausalLM

from models import CharTokenizer, small_llama
from seerflex.finetune import extend_context
from seerflex.recipes.finetune import FinetuneRecipe, train

SEERFLEX = {"block_size": 32, "gate_hidden_size": 16, "policy": "topk:0.3:local=1"}


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("".join(f"Chapter {i}. It is a truth universally acknowledged, number {i * 7}. " for i in range(80)))
    return f


def recipe(out, text_file, **kw) -> FinetuneRecipe:
    return FinetuneRecipe(**{"model": "unused", "data": str(text_file), "seq_len": 256, "batch_size": 1, "steps": 6,
                             "lr": 1e-2, "gate_lr": 1e-2, "warmup_steps": 1, "schedule_steps": 3, "density": 0.3,
                             "rope_factor": 2.0, "checkpoint_every": 3, "output_dir": str(out / "run"),
                             "lora": {"r": 4, "alpha": 8}, "seerflex": SEERFLEX} | kw)


def test_extend_context_equals_a_model_built_with_the_scaled_rope():
    model = small_llama()
    rope = extend_context(model, 4.0)
    assert rope["rope_type"] == "yarn" and model.config.max_position_embeddings == 4 * 2048
    fresh = AutoModelForCausalLM.from_config(model.config)
    fresh.load_state_dict(model.state_dict())
    ids = torch.randint(1, 90, (1, 300))
    with torch.no_grad():  # equal up to the order of a threaded matmul's sums
        torch.testing.assert_close(model(ids).logits, fresh(ids).logits, rtol=1e-6, atol=1e-6)
    plain = small_llama()
    with torch.no_grad():
        assert not torch.allclose(plain(ids).logits, model(ids).logits)  # the rope really changed
    with pytest.raises(ValueError, match="already scaled"):
        extend_context(model, 2.0)
    with pytest.raises(ValueError, match="must be a number > 1"):
        extend_context(small_llama(), 1.0)


def test_model_and_gates_train_through_sparse_attention_and_nothing_else_moves(tmp_path, text_file):
    model = small_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export = train(recipe(tmp_path, text_file, steps=8, checkpoint_every=100, kl_rows=1.0), model, CharTokenizer())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert [r["density"] for r in rows[:4]] == pytest.approx([1.0, 1 - 0.7 / 3, 1 - 1.4 / 3, 0.3])
    assert rows[-1]["achieved_density"] < 1.0 and rows[0]["achieved_density"] == 1.0
    assert rows[-1]["lm_loss"] < 0.97 * rows[0]["lm_loss"] and rows[-1]["gate_kl"] < rows[0]["gate_kl"]
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["kernel"] == "triton"  # what ran, recorded
    targets = ("q_proj", "k_proj", "v_proj", "o_proj")  # LoRA's modules (merged into them by the export)
    for name, value in model.state_dict().items():  # everything else never moved: no gradient reached it
        if name in before and not any(t in name for t in targets):
            assert torch.equal(value, before[name]), name
    lora = load_file(str(export / "lora" / "adapter_model.safetensors"))
    assert lora and any(float(t.abs().max()) > 0 for k, t in lora.items() if "lora_B" in k)  # B starts at 0
    merged = AutoModelForCausalLM.from_pretrained(export / "model")
    assert merged.config.rope_parameters["rope_type"] == "yarn" and merged.config.max_position_embeddings == 4096
    assert any(not torch.equal(merged.state_dict()[k], before[k]) for k in before if k.endswith("q_proj.weight"))
    from seerflex import RuntimeOptions, SeerFlexModel

    sparse = SeerFlexModel.from_pretrained(merged, export / "seerflex", runtime=RuntimeOptions(dense_below=0))
    gates = load_file(str(export / "seerflex" / "adapter_model.safetensors"))
    assert all(float(t.std()) > 0 for t in gates.values())
    out = sparse.generate(input_ids=torch.randint(1, 90, (1, 160)), max_new_tokens=4, do_sample=False)
    assert out.shape == (1, 164)


def test_kill_and_resume_gives_the_same_run(tmp_path, text_file, killed_after_checkpoint):
    train(recipe(tmp_path / "a", text_file), small_llama(), CharTokenizer())
    killed_after_checkpoint(lambda: train(recipe(tmp_path / "b", text_file), small_llama(), CharTokenizer()))  # at step 3
    torch.manual_seed(1234)  # the resumed run must not depend on the process's RNG state
    with pytest.raises(ValueError, match="another fine-tune config"):
        train(recipe(tmp_path / "b", text_file, resume=True, rope_factor=4.0), small_llama(), CharTokenizer())
    train(recipe(tmp_path / "b", text_file, resume=True), small_llama(), CharTokenizer())
    lines = {r: [json.loads(x) for x in (tmp_path / r / "run" / "metrics.jsonl").read_text().splitlines()]
             for r in ("a", "b")}
    assert [x["step"] for x in lines["b"]] == [1, 2, 3, 4, 5, 6]
    assert [x["loss"] for x in lines["a"]] == [x["loss"] for x in lines["b"]]  # the same loss curve, exactly
    a, b = (load_file(str(tmp_path / r / "run" / "checkpoint" / "gates.safetensors")) for r in ("a", "b"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize(("changes", "message"), [
    ({"density": 0.0}, "density must be in"), ({"density": 1.5}, "density must be in"),
    ({"trainable": "half"}, "trainable must be lora or full"), ({"lora": {"rank": 4}}, "unknown lora keys"),
    ({"rope_factor": 0.5}, "rope_factor must be >= 1"), ({"kl_rows": 0.0}, r"kl_rows must be in \(0, 1\]"),
    ({"skip_first_rows": 1.0}, r"skip_first_rows must be in \[0, 1\)"), ({"target": "sum"}, "target must be max or mass"),
    ({"dense_attention": "eager2", "gates": False}, "dense_attention must be sdpa or flex_attention"),
    ({"dense_attention": "flex_attention"}, "dense_attention chooses the attention of a gates=false run"),
    ({"runtime": {"cuda_graphs": True}}, "runtime.cuda_graphs: use the cuda_graphs knob"),
])
def test_bad_recipes_fail_before_loading(tmp_path, text_file, changes, message):
    with pytest.raises(ValueError, match=message):
        recipe(tmp_path, text_file, **changes)


def test_missing_lora_target_and_unscalable_models_are_named(tmp_path, text_file):
    with pytest.raises(ValueError, match=r"LoRA target module\(s\) \['wq'\] do not exist"):
        train(recipe(tmp_path, text_file, lora={"target_modules": ["wq"]}), small_llama(), CharTokenizer())
    scaled = small_llama()
    extend_context(scaled, 2.0)
    with pytest.raises(ValueError, match="already scaled"):
        train(recipe(tmp_path / "x", text_file), copy.deepcopy(scaled), CharTokenizer())


def test_full_fine_tune_trains_every_weight_and_exports_without_lora(tmp_path, text_file):
    model = small_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    export = train(recipe(tmp_path, text_file, trainable="full", steps=2, lr=1e-3), model, CharTokenizer())
    moved = [k for k, v in model.state_dict().items() if k in before and not torch.equal(v, before[k])]
    assert any("mlp" in k for k in moved) and any("embed" in k for k in moved)
    assert not (export / "lora").exists() and (export / "model" / "config.json").is_file()


def test_a_dense_fine_tune_without_gates_is_the_plain_extended_model(tmp_path, text_file, monkeypatch):
    import seerflex.hf.model

    def no_gates(*args, **kwargs):
        raise AssertionError("gates=false must not wrap the model")

    monkeypatch.setattr(seerflex.hf.model, "get_seerflex_model", no_gates)
    model = small_llama()
    export = train(recipe(tmp_path, text_file, gates=False, steps=4), model, CharTokenizer())
    rows = [json.loads(x) for x in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert all(r["density"] == 1.0 and r["gate_kl"] == 0.0 for r in rows) and rows[-1]["lm_loss"] < rows[0]["lm_loss"]
    assert not (export / "seerflex").exists() and (export / "lora").is_dir()
    assert json.loads((tmp_path / "run" / "recipe.json").read_text())["kernel"] == "sdpa"
    assert not any("seerflex" in n for n, _ in model.named_modules())  # the model's own attention ran
    merged = AutoModelForCausalLM.from_pretrained(export / "model")
    assert merged.config.rope_parameters["rope_type"] == "yarn"


def test_a_non_finite_loss_stops_the_run_before_the_update_with_one_line(tmp_path, text_file):
    """Layers skip their per-call NaN check in training (a host sync each); the loss is checked once a step."""
    model = small_llama()
    with torch.no_grad():
        model.lm_head.weight[3, 0] = float("nan")
    with pytest.raises(ValueError, match=r"step 1: the loss is not finite on some process \(here: LM nan.*no checkpoint"):
        train(recipe(tmp_path, text_file), model, CharTokenizer())
    assert not (tmp_path / "run" / "checkpoint").exists()


@pytest.mark.skipif(torch.cuda.is_available(), reason="on CUDA it runs (benchmarks/gpu_finetune.sh speed)")
def test_the_dense_flex_baseline_is_refused_where_flex_has_no_backward(tmp_path, text_file):
    with pytest.raises(ValueError, match="flex_attention trains on CUDA only"):
        recipe(tmp_path, text_file, gates=False, dense_attention="flex_attention")


def test_gates_distilled_before_start_the_fine_tune(tmp_path, text_file):
    first = train(recipe(tmp_path / "a", text_file, steps=8, schedule_steps=0), small_llama(), CharTokenizer())
    again = train(recipe(tmp_path / "b", text_file, steps=1, schedule_steps=0, gate_lr=1e-12,
                         gates_from=str(first / "seerflex")), small_llama(), CharTokenizer())
    train(recipe(tmp_path / "c", text_file, steps=1, schedule_steps=0), small_llama(), CharTokenizer())
    start, kept = (load_file(str(f / "seerflex" / "adapter_model.safetensors")) for f in (first, again))
    assert start.keys() == kept.keys() and all(torch.allclose(start[k], kept[k], atol=1e-6) for k in start)
    kl = {r: json.loads((tmp_path / r / "run" / "metrics.jsonl").read_text().splitlines()[0])["gate_kl"]
          for r in ("a", "b", "c")}
    assert kl["b"] < kl["c"] == pytest.approx(kl["a"])  # trained gates start better than fresh ones
    with pytest.raises(ValueError, match="another fine-tune config"):  # where the gates came from is part of a run
        train(recipe(tmp_path / "b", text_file, steps=2, schedule_steps=0, resume=True), small_llama(), CharTokenizer())
    with pytest.raises(ValueError, match="gates=false trains none"):
        recipe(tmp_path, text_file, gates=False, gates_from=str(first / "seerflex"))
    with pytest.raises(ValueError, match="no adapter folder"):
        recipe(tmp_path, text_file, gates_from=str(tmp_path / "missing"))


def test_a_checkpoint_from_before_the_gates_knobs_still_resumes(tmp_path, text_file):
    from seerflex.distill import checkpoint

    train(recipe(tmp_path, text_file), small_llama(), CharTokenizer())
    folder = tmp_path / "run" / "checkpoint"
    tensors, state = checkpoint.load(folder)
    for key in ("gates", "gates_from"):
        del state["recipe"][key]
    checkpoint.save(folder, tensors, state)
    train(recipe(tmp_path, text_file, resume=True), small_llama(), CharTokenizer())  # no "another config" error
    with pytest.raises(ValueError, match="differs in gates"):
        train(recipe(tmp_path, text_file, resume=True, gates=False), small_llama(), CharTokenizer())


def test_the_gate_loss_trains_only_the_gates_and_uses_the_attention_scale():
    from seerflex import RuntimeOptions, SeerFlexConfig, get_seerflex_model
    from seerflex.distill.loss import gate_kl
    from seerflex.finetune import GateLoss
    from seerflex.ground_truth import block_attention_map

    model = small_llama()
    model.requires_grad_(True)
    wrapped = get_seerflex_model(model, SeerFlexConfig(**SEERFLEX), runtime=RuntimeOptions(dense_below=0))
    model.requires_grad_(True)  # as a full fine-tune: every weight trains
    loss = GateLoss()
    with wrapped.gate_training(loss):
        wrapped(input_ids=torch.randint(1, 90, (1, 256)), use_cache=False)
    loss.total().backward()
    assert all(p.grad is None for n, p in model.named_parameters() if "seerflex" not in n)
    assert all(p.grad is not None and float(p.grad.abs().max()) > 0 for n, p in wrapped.named_parameters()
               if "seerflex" in n)
    from seerflex import BlockLayout, ScorerInputs

    q, k = torch.randn(1, 4, 128, 16) * 3, torch.randn(1, 2, 128, 16)
    logits = torch.randn(1, 4, 4, 4).masked_fill(~torch.ones(4, 4, dtype=torch.bool).tril(), float("-inf"))
    scaled = GateLoss()
    scaled(0, logits, ScorerInputs(q, k, q, k, BlockLayout(128, 32), scale=0.7))
    target = block_attention_map(q, k, block_size=32, mode="mass", scale=0.7)
    default = block_attention_map(q, k, block_size=32, mode="mass")
    assert torch.isclose(scaled.total(), gate_kl(logits, target, skip_first_rows=0.25))
    assert not torch.isclose(gate_kl(logits, default, skip_first_rows=0.25), gate_kl(logits, target, skip_first_rows=0.25))


def test_the_gate_target_on_a_sample_of_rows_is_the_full_losss_rows_and_resumes_the_same():
    from seerflex import BlockLayout, ScorerInputs
    from seerflex.distill.loss import gate_kl
    from seerflex.finetune import GateLoss
    from seerflex.ground_truth import block_attention_map

    q, k = torch.randn(2, 4, 512, 16) * 2, torch.randn(2, 2, 512, 16)
    logits = torch.randn(2, 4, 16, 16).masked_fill(~torch.ones(16, 16, dtype=torch.bool).tril(), float("-inf"))
    inputs = ScorerInputs(q, k, q, k, BlockLayout(512, 32))
    full = block_attention_map(q, k, block_size=32, mode="mass")
    sampled = GateLoss(row_fraction=0.25, seed=3, step=7)
    rows = sampled.sample_rows(5, 16)
    assert len(rows) == 3 and rows.min() >= 4 and torch.equal(rows, rows.unique())  # 0.25 of the 12 rows after 4
    assert torch.equal(rows, GateLoss(row_fraction=0.25, seed=3, step=7).sample_rows(5, 16))  # (seed, step, layer)
    assert not all(torch.equal(rows, GateLoss(row_fraction=0.25, seed=3, step=s).sample_rows(5, 16)) for s in range(8, 12))
    sampled(5, logits, inputs)
    torch.testing.assert_close(sampled.total(), gate_kl(logits[:, :, rows], full[:, :, rows], skip_first_rows=0.0))
    assert GateLoss().sample_rows(0, 16) is None
    # a GateLoss drawing one row a time, averaged over the rows, is the full loss
    per_row = {}
    for step in range(12 * 40):
        one = GateLoss(row_fraction=1 / 12, step=step)
        one(0, logits, inputs)
        per_row[int(one.sample_rows(0, 16)[0])] = one.total()
    assert sorted(per_row) == list(range(4, 16))
    torch.testing.assert_close(sum(per_row.values()) / 12, gate_kl(logits, full, skip_first_rows=0.25))
    with pytest.raises(ValueError, match="row_fraction must be in"):
        GateLoss(row_fraction=0.0)
    with pytest.raises(ValueError, match="skip_first_rows must be in"):
        GateLoss(row_fraction=0.5, skip_first_rows=1.0)


def test_extend_context_keeps_the_models_other_rope_parameters():
    model = small_llama()
    model.config.rope_parameters["partial_rotary_factor"] = 1.0
    extend_context(model, 2.0)
    assert model.config.rope_parameters["partial_rotary_factor"] == 1.0


def test_a_launch_accelerate_would_split_into_independent_runs_is_refused(tmp_path, text_file, monkeypatch):
    monkeypatch.setenv("WORLD_SIZE", "2")  # torchrun on CPU without ACCELERATE_USE_CPU: accelerate sees one process
    with pytest.raises(ValueError, match="ACCELERATE_USE_CPU=true"):
        train(recipe(tmp_path, text_file), small_llama(), CharTokenizer())


@pytest.mark.parametrize("engine", ["FSDP", "DEEPSPEED"])
def test_engines_that_shard_parameters_are_refused_before_training(engine, monkeypatch):
    from types import SimpleNamespace

    from accelerate.utils import DistributedType

    from seerflex.recipes.common import check_world

    monkeypatch.setenv("WORLD_SIZE", "2")
    check_world(SimpleNamespace(num_processes=2, distributed_type=DistributedType.MULTI_GPU))  # DDP runs
    with pytest.raises(ValueError, match=f"{engine} is not supported yet"):
        check_world(SimpleNamespace(num_processes=2, distributed_type=getattr(DistributedType, engine)))


def test_cuda_graphs_start_when_the_density_is_fixed_and_never_under_sharding(tmp_path, text_file, monkeypatch):
    """The layers replay CUDA graphs from the first step after the schedule (one recording per layer), on CUDA and
    unsharded only; each such step marks a new graph step, and the layers then run with ``cuda_graphs`` on."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    r = recipe(tmp_path, text_file)
    assert r.graphs_from(cuda, sharded=False) == 3
    assert r.graphs_from(cpu, sharded=False) is None and r.graphs_from(cuda, sharded=True) is None
    assert recipe(tmp_path, text_file, cuda_graphs=False).graphs_from(cuda, False) is None
    assert recipe(tmp_path, text_file, gates=False).graphs_from(cuda, False) is None
    import seerflex.attention as attention

    marks, seen = [], []
    real = attention.SeerFlexAttention.forward
    monkeypatch.setattr(FinetuneRecipe, "graphs_from", lambda self, device, sharded: 3)  # as on a GPU
    monkeypatch.setattr(torch.compiler, "cudagraph_mark_step_begin", lambda: marks.append(1))
    monkeypatch.setattr(attention.SeerFlexAttention, "forward",
                        lambda self, *a, **kw: (seen.append(self.runtime.options.cuda_graphs), real(self, *a, **kw))[1])
    train(recipe(tmp_path, text_file, steps=5, checkpoint_every=100), small_llama(), CharTokenizer())
    layers = len(seen) // 5
    assert len(marks) == 2 and seen == [False] * (3 * layers) + [True] * (2 * layers)
