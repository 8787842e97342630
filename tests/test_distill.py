"""Distillation on a tiny random Llama: the loss is a true KL, training lowers it, resume is exact."""

from __future__ import annotations

import pytest
import torch

from models import CharTokenizer, small_llama
from seerflex.distill import data as distill_data
from seerflex.distill.loss import gate_kl, gate_recall
from seerflex.recipes.config import parse_recipe
from seerflex.recipes.distill import DistillRecipe, train

SEERFLEX = {"block_size": 32, "gate_hidden_size": 16, "policy": "topk:density=0.3:sink=1:local=1"}


def recipe(tmp_path, text_file, **kw) -> DistillRecipe:
    return DistillRecipe(**{"model": "unused", "data": str(text_file), "seq_len": 128, "batch_size": 2, "steps": 6,
                            "lr": 1e-2, "warmup_steps": 1, "checkpoint_every": 3, "output_dir": str(tmp_path / "run"),
                            "seerflex": SEERFLEX} | kw)


@pytest.fixture
def text_file(tmp_path):
    f = tmp_path / "book.txt"
    f.write_text("".join(f"Chapter {i}. It is a truth universally acknowledged, number {i * 7}. " for i in range(60)))
    return f


def test_kl_matches_float64_by_hand():
    logits = torch.randn(2, 3, 8, 8).masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), float("-inf"))
    target = torch.rand(2, 3, 8, 8).tril()
    target[..., 5, 1] = 0.0  # a zero target entry contributes nothing
    target = target / target.sum(-1, keepdim=True)
    logq = logits.double().log_softmax(-1)[..., 2:, :]
    t = target.double()[..., 2:, :]
    by_hand = torch.where(t > 0, t * (t.log() - logq), torch.zeros_like(t))
    assert torch.isclose(gate_kl(logits, target).double(), by_hand.mean(), rtol=1e-5)
    assert torch.isclose(gate_kl(logits, target, reduction="batchmean").double(), by_hand.sum() / (2 * 3 * 6), rtol=1e-5)
    assert torch.isfinite(gate_kl(logits, target, skip_first_rows=0.0))
    kept = torch.ones(2, 3, 8, 8, dtype=torch.bool)
    assert torch.isclose(gate_recall(kept, target), torch.tensor(1.0))


def test_rectangular_blocks_distil_and_save_their_shape(tmp_path, text_file):
    """Query blocks of 64 over key blocks of 32: logits and target are [nq, nk], the adapter keeps the shape."""
    import json

    adapter = train(recipe(tmp_path, text_file, steps=2, checkpoint_every=100, seerflex=SEERFLEX | {"q_block_size": 64}),
                    small_llama(), CharTokenizer())
    losses = [json.loads(line)["loss"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert len(losses) == 2 and all(0 < x < float("inf") for x in losses)
    saved = json.loads((adapter / "adapter_config.json").read_text())
    assert (saved["q_block_size"], saved["block_size"]) == (64, 32)


@pytest.mark.slow
def test_training_lowers_kl_and_leaves_the_base_model_alone(tmp_path, text_file):
    model = small_llama()
    before = {k: v.clone() for k, v in model.state_dict().items()}
    train(recipe(tmp_path, text_file, steps=12, checkpoint_every=100), model, CharTokenizer())
    lines = (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()
    import json
    losses = [json.loads(line)["loss"] for line in lines]
    assert len(losses) == 12 and losses[-1] < 0.7 * losses[0]
    for k, v in model.state_dict().items():
        if "seerflex" not in k:
            assert torch.equal(v, before[k]), k
    assert (tmp_path / "run" / "adapter" / "adapter_model.safetensors").is_file()


@pytest.mark.slow
def test_kill_and_resume_gives_identical_gates(tmp_path, text_file, killed_after_checkpoint):
    from safetensors.torch import load_file

    train(recipe(tmp_path / "a", text_file), small_llama(), CharTokenizer())
    killed_after_checkpoint(lambda: train(recipe(tmp_path / "b", text_file), small_llama(), CharTokenizer()))  # at step 3
    torch.manual_seed(1234)  # the resumed run must not depend on the process's RNG state
    train(recipe(tmp_path / "b", text_file, resume=True), small_llama(), CharTokenizer())
    import json

    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run started at step 4, it did not redo 1-3
    a = load_file(str(tmp_path / "a" / "run" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_packing_and_batch_order_are_deterministic():
    pieces = distill_data.pack(["abc" * 50, "xyz" * 50], CharTokenizer(), 32)
    assert pieces.shape == (9, 32)
    first = [distill_data.batch_indices(s, 4, 9, seed=1).tolist() for s in range(5)]
    assert first == [distill_data.batch_indices(s, 4, 9, seed=1).tolist() for s in range(5)]
    assert sorted(sum(first[:2], []) + first[2][:1]) == list(range(9))  # one epoch visits every piece once
    with pytest.raises(ValueError, match="unknown key"):
        parse_recipe(DistillRecipe, ["stepz=3"], prog="seerflex distill")


def test_per_head_stats_count_the_rows_that_keep_under_half_their_mass():
    """``lost``: the share of real query-block rows whose kept blocks hold under half the target mass; a padded row
    (no target) counts in neither numerator nor denominator."""
    from seerflex import BlockLayout
    from seerflex.distill.collector import Collector

    target = torch.zeros(1, 2, 4, 4)
    target[0, :, 0, 0] = 1.0
    target[0, :, 1, :2] = torch.tensor([0.3, 0.7])
    target[0, :, 2, :3] = torch.tensor([0.6, 0.2, 0.2])  # row 3: padding, no target
    kept = torch.zeros(1, 2, 4, 4, dtype=torch.bool)
    kept[0, :, :, 0] = True  # head 0 keeps block 0 only: rows 0 (1.0), 1 (0.3), 2 (0.6)
    kept[0, 1, 1, 1] = True  # head 1 also block 1 of row 1: 1.0
    collector = Collector(target="mass", skip_first_rows=0.0, per_head=True)
    collector.add(0, torch.zeros(1, 2, 4, 4), target, kept, BlockLayout(4 * 16, 16))
    density, recall, lost = collector.head_stats[0]
    torch.testing.assert_close(lost, torch.tensor([1 / 3, 0.0]))
    torch.testing.assert_close(recall, torch.tensor([(1.0 + 0.3 + 0.6) / 3, (1.0 + 1.0 + 0.6) / 3]))


def test_layer_weights_scale_each_layers_kl_in_the_loss(tmp_path, text_file):
    """``layer_weights`` multiplies a layer's KL in the total (others 1); a layer without a gate is refused."""
    from seerflex.distill.collector import Collector

    collector = Collector(layer_weights={1: 4.0, 2: 0.0})
    collector.losses.update({0: torch.tensor(0.5), 1: torch.tensor(0.25), 2: torch.tensor(3.0)})
    assert float(collector.total(scale=10.0)) == pytest.approx(10.0 * (0.5 + 4 * 0.25))
    assert DistillRecipe(layer_weights={"3": 2}).layer_weights == {3: 2.0}  # YAML may key by strings
    with pytest.raises(ValueError, match=r"layer_weights name layers \[99\] that have no gate"):
        train(recipe(tmp_path, text_file, steps=1, layer_weights={99: 2.0}), small_llama(), CharTokenizer())


def test_weighting_a_layer_speeds_up_its_own_gate(tmp_path, text_file):
    """The same steps with layer 1's KL weighted x8 end with a lower KL in layer 1 than without the weight."""
    import json

    def last_kl(out: str, **kw) -> list[float]:
        train(recipe(tmp_path / out, text_file, steps=4, checkpoint_every=100, **kw), small_llama(), CharTokenizer())
        return json.loads((tmp_path / out / "run" / "metrics.jsonl").read_text().splitlines()[-1])["layer_kl"]

    plain, weighted = last_kl("plain"), last_kl("weighted", layer_weights={1: 8.0})
    assert weighted[1] < plain[1]
