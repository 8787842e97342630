"""Distillation on a tiny random Llama: the loss is a true KL, training lowers it, resume is exact."""

from __future__ import annotations

import pytest
import torch

from models import CharTokenizer, small_llama
from seerflex.distill import checkpoint
from seerflex.distill import data as distill_data
from seerflex.distill.loss import gate_kl, gate_recall
from seerflex.recipes.config import parse_recipe
from seerflex.recipes.distill import DistillRecipe, train

SEERFLEX = {"block_size": 32, "gate_hidden_size": 16, "policy": "topk:density=0.3:sink=1:local=1"}


def recipe(tmp_path, text_file, **kw) -> DistillRecipe:
    """A tiny run; the KL over whole rows, since at 128 tokens every block is always-on (the free KL is tested at 512)."""
    return DistillRecipe(**{"model": "unused", "data": str(text_file), "seq_len": 128, "batch_size": 2, "steps": 6,
                            "lr": 1e-2, "warmup_steps": 1, "checkpoint_every": 3, "output_dir": str(tmp_path / "run"),
                            "seerflex": SEERFLEX, "kl_blocks": "all"} | kw)


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
    _, state = checkpoint.load(tmp_path / "b" / "run" / "checkpoint")
    assert isinstance(state["data"], str) and len(state["data"]) == 16  # the data it was trained on, hashed
    train(recipe(tmp_path / "b", text_file, resume=True), small_llama(), CharTokenizer())
    import json

    steps = [json.loads(x)["step"] for x in (tmp_path / "b" / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]  # the resumed run started at step 4, it did not redo 1-3
    a = load_file(str(tmp_path / "a" / "run" / "adapter" / "adapter_model.safetensors"))
    b = load_file(str(tmp_path / "b" / "run" / "adapter" / "adapter_model.safetensors"))
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)


def test_a_resume_on_other_data_is_named(tmp_path, capsys):
    from seerflex.recipes.common import data_fingerprint, warn_if_other_data

    pieces, epoch = torch.arange(24).view(4, 6), torch.tensor([0, 1, 2, 3, 0])
    same = data_fingerprint(pieces, epoch)
    assert same == data_fingerprint(pieces.clone(), epoch.clone())
    for other in (data_fingerprint(pieces + 1, epoch), data_fingerprint(pieces, epoch.flip(0))):
        assert other != same
    warn_if_other_data(tmp_path, {"data": same}, same)
    warn_if_other_data(tmp_path, {}, same)  # checkpoints from before the record
    assert "other data" not in capsys.readouterr().out
    warn_if_other_data(tmp_path, {"data": data_fingerprint(pieces + 1, epoch)}, same)
    assert "trained on other data" in capsys.readouterr().out


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
    kept[0, 1, 2, 1] = True  # and block 1 of row 2: 0.8
    diagonal = torch.eye(4, dtype=torch.bool)[None, None]  # always on: the free mass is row 1's 0.3 and row 2's 0.8
    collector = Collector(target="mass", skip_first_rows=0.0, per_head=True)
    collector.add(0, torch.zeros(1, 2, 4, 4), target, kept, BlockLayout(4 * 16, 16), always_on=diagonal)
    density, recall, lost, free = collector.head_stats[0]
    torch.testing.assert_close(lost, torch.tensor([1 / 3, 0.0]))
    torch.testing.assert_close(recall, torch.tensor([(1.0 + 0.3 + 0.6) / 3, (1.0 + 1.0 + 0.8) / 3]))
    torch.testing.assert_close(free, torch.tensor([(0.3 + 0.6) / 1.1, 1.0]))  # head 0 misses row 2's block 1
    collector.add(0, torch.zeros(1, 2, 4, 4), target, kept, BlockLayout(4 * 16, 16))  # none always on: all mass free
    torch.testing.assert_close(collector.head_stats[0][3], torch.tensor([(1.0 + 0.3 + 0.6) / 3, (1.0 + 1.0 + 0.8) / 3]))


def test_row_focus_weighs_each_rows_kl_by_the_mass_its_selection_misses():
    """float64 by hand: row weights 1 + focus x (1 - covered mass), normalised over the counted rows with a target;
    padded rows (no target) and the skipped first rows count nothing, and a constant weight changes nothing."""
    from seerflex.distill.collector import Collector
    from seerflex.layout import BlockLayout

    gen = torch.Generator().manual_seed(3)
    logits = torch.randn(2, 3, 8, 8, generator=gen).masked_fill(~torch.ones(8, 8, dtype=torch.bool).tril(), float("-inf"))
    target = torch.rand(2, 3, 8, 8, generator=gen).tril()
    target = target / target.sum(-1, keepdim=True)
    target[1, :, 7] = 0.0  # a padded query block
    kept = torch.rand(2, 3, 8, 8, generator=gen) < 0.4
    t, logq = target.double(), logits.double().log_softmax(-1)
    row_kl = torch.where(t > 0, t * (t.log() - logq), torch.zeros_like(t)).sum(-1)[..., 2:]
    w = (1 + 4.0 * (1 - (t * kept).sum(-1)).clamp(min=0))[..., 2:]
    real = t.sum(-1)[..., 2:] > 0
    by_hand = (row_kl * w).sum() / w[real].mean() / (2 * 3 * 6 * 8)
    collector = Collector(target="mass", row_focus=4.0)
    collector.add(0, logits, target, kept, BlockLayout(8 * 16, 16))
    assert torch.isclose(collector.losses[0].double(), by_hand, rtol=1e-5)
    assert not torch.isclose(collector.losses[0], gate_kl(logits, target), rtol=1e-3)  # the weights do move the loss
    constant = gate_kl(logits, target, row_weights=torch.full((2, 3, 8), 5.0))
    assert torch.isclose(constant, gate_kl(logits, target), rtol=1e-6)


def test_free_kl_is_the_kl_over_the_blocks_the_policy_does_not_keep_anyway():
    """float64 by hand: always-on blocks leave both distributions, the target is renormalised over the rest, rows with
    no free block or no free mass count nothing, and the gradient stays finite (an empty row gives no NaN)."""
    from seerflex.distill.collector import Collector
    from seerflex.layout import BlockLayout

    gen = torch.Generator().manual_seed(5)
    n = 8
    causal = torch.ones(n, n, dtype=torch.bool).tril()
    logits = torch.randn(2, 3, n, n, generator=gen).masked_fill(~causal, float("-inf")).requires_grad_()
    target = torch.rand(2, 3, n, n, generator=gen).masked_fill(~causal, 0.0)
    target = target / target.sum(-1, keepdim=True)
    on = (torch.eye(n, dtype=torch.bool) | torch.eye(n, dtype=torch.bool).roll(-1, 1).tril())[None, None]  # diag + 1
    on = on.clone()
    on[..., :, 0] = True  # sink
    target[1, 0, 5] = 0.0  # a row with free blocks and no mass (a padded query block): no NaN from 0 / 0
    collector = Collector(target="mass", skip_first_rows=0.25, kl_blocks="free")
    collector.add(0, logits, target, torch.ones(2, 3, n, n, dtype=torch.bool), BlockLayout(n * 16, 16), always_on=on)
    free = causal & ~on[0, 0]
    t = target.double().masked_fill(~free, 0.0)
    t = t / t.sum(-1, keepdim=True).clamp(min=1e-300)  # row 5 of batch 1, head 0 stays all zero
    logq = logits.detach().double().masked_fill(~free, float("-inf")).log_softmax(-1)
    terms = torch.where(t > 0, t * (t.log() - logq), torch.zeros_like(t))[..., 2:, :]  # rows 0-1 skipped
    by_hand = terms.sum() / terms.numel()  # rows 2's free set is empty: it adds 0 to the sum, like a short row
    assert torch.isclose(collector.losses[0].double(), by_hand, rtol=1e-5)
    assert not torch.isclose(collector.losses[0], gate_kl(logits, target), rtol=1e-3)
    collector.losses[0].backward()
    assert torch.isfinite(logits.grad).all() and logits.grad[..., 2, :].abs().sum() == 0  # row 2: nothing free
    with pytest.raises(ValueError, match="always-on"):
        collector.add(0, logits, target, torch.ones(2, 3, n, n, dtype=torch.bool), BlockLayout(n * 16, 16))
    with pytest.raises(ValueError, match="kl_blocks must be all or free"):
        DistillRecipe(kl_blocks="some")


def test_row_focus_changes_the_training_is_recorded_and_refuses_bad_values(tmp_path, text_file):
    """With rows that lose mass (512 tokens, 16 blocks, top 30%) the focused run, and the run with the KL over the free
    blocks only, end with other (finite) gates than the plain one from the same seed; the recipe records the knob, and
    a negative or non-finite focus is refused."""
    import json

    from safetensors.torch import load_file

    def gates(out: str, **kw) -> dict[str, torch.Tensor]:
        train(recipe(tmp_path / out, text_file, seq_len=512, steps=3, checkpoint_every=100, **kw), small_llama(),
              CharTokenizer())
        metrics = [json.loads(line) for line in (tmp_path / out / "run" / "metrics.jsonl").read_text().splitlines()]
        assert metrics[-1]["recall"] < 1.0  # some rows do lose mass, so the weights are not all one
        return load_file(tmp_path / out / "run" / "adapter" / "adapter_model.safetensors")

    plain, focused = gates("plain", kl_blocks="all"), gates("focused", row_focus=8.0, kl_blocks="all")
    free = gates("free", kl_blocks=DistillRecipe().kl_blocks, seerflex=SEERFLEX | {"block_size": 64})  # the default
    assert plain.keys() == focused.keys() == free.keys()
    assert any(not torch.equal(plain[k], focused[k]) for k in plain)
    assert any(not torch.equal(plain[k], free[k]) for k in plain) and all(torch.isfinite(v).all() for v in free.values())
    saved = json.loads((tmp_path / "focused" / "run" / "recipe.json").read_text())["recipe"]
    assert saved["row_focus"] == 8.0
    adapters = {n: json.loads((tmp_path / n / "run" / "adapter" / "adapter_config.json").read_text()) for n in ("plain", "free")}
    assert adapters["plain"]["free_beyond"] is None  # whole rows: every score was trained
    assert adapters["free"]["free_beyond"] == {"sink": 1, "local": 1}  # SEERFLEX's policy: what its scores never learnt
    with pytest.raises(ValueError, match="at seq_len=128 every block the trained rows may attend is always-on"):
        recipe(tmp_path, text_file, kl_blocks="free")
    with pytest.raises(ValueError, match="not a recipe key"):
        recipe(tmp_path, text_file, seerflex=SEERFLEX | {"free_beyond": {"sink": 0, "local": 0}})
    mixed = SEERFLEX | {"layer_policies": {"1": "topk:0.3:sink=2:local=1"}}
    with pytest.raises(ValueError, match=r"one sink and local in every layer's policy.*\(1, 1\), \(2, 1\)"):
        recipe(tmp_path, text_file, seq_len=512, kl_blocks="free", seerflex=mixed)
    from seerflex.hf.model import SeerFlexModel  # the record survives loading, in tokens at other blocks: from 64 x 64,
    # local counts back from a query block's start, so 32-token query blocks need 32 tokens more
    for shape, beyond in ((None, {"sink": 1, "local": 1}), ((32, 32), {"sink": 2, "local": 3}),
                          ((128, 64), {"sink": 1, "local": 1}), ((128, 128), {"sink": 1, "local": 1})):
        loaded = SeerFlexModel.from_pretrained(small_llama(), tmp_path / "free" / "run" / "adapter", block_shape=shape)
        assert loaded.peft_config["default"].free_beyond == beyond
    resumed = {"seq_len": 512, "steps": 4, "checkpoint_every": 100, "resume": True}
    with pytest.raises(ValueError, match="trained with kl_blocks=free: resume with that"):  # the loss may not change
        train(recipe(tmp_path / "free", text_file, kl_blocks="all", seerflex=SEERFLEX | {"block_size": 64}, **resumed),
              small_llama(), CharTokenizer())
    wider = SEERFLEX | {"block_size": 64, "policy": "topk:density=0.3:sink=1:local=2"}
    with pytest.raises(ValueError, match=r"left out the always-on blocks \{'sink': 1, 'local': 1\}"):
        train(recipe(tmp_path / "free", text_file, kl_blocks="free", seerflex=wider, **resumed), small_llama(),
              CharTokenizer())
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="row_focus must be a finite number >= 0"):
            DistillRecipe(row_focus=bad)


def test_free_gates_refuse_fewer_always_on_blocks_in_the_collector_and_before_an_eval_sweep(tmp_path, text_file,
                                                                                          recipe_model, capsys):
    """An eval sweep refuses a policy the gates cannot rank under before running any scorer (a late failure would lose
    the baselines' rows); the distillation collector refuses it too, and runs baselines under it."""
    from seerflex import RuntimeOptions, SeerFlexConfig, get_seerflex_model
    from seerflex.cli import main as cli_main
    from seerflex.distill.collector import Collector, collecting
    from seerflex.hf.families import hf_model_of
    from seerflex.scorers import SCORERS

    cfg = SeerFlexConfig(block_size=32, gate_hidden_size=16, policy="topk:0.3:local=0",
                         free_beyond={"sink": 1, "local": 1})
    model = get_seerflex_model(small_llama(), cfg, runtime=RuntimeOptions(dense_below=0))
    ids = torch.randint(0, 50, (1, 256))
    with collecting(hf_model_of(model), Collector()), pytest.raises(ValueError, match="kl_blocks=free beyond sink=1"):
        model(input_ids=ids, use_cache=False)
    model.set_scorer(SCORERS["xattention"]())
    with collecting(hf_model_of(model), Collector()), torch.no_grad():
        model(input_ids=ids, use_cache=False)
    model.save_pretrained(tmp_path / "adapter")
    argv = ["eval", "ppl", "model=tiny", f"adapter={tmp_path / 'adapter'}", "scorers=[dense,gate]",
            "policies=[topk:0.3:local=0]", f"text={text_file}", "window=256", "prefix=64", "windows=1",
            f"out={tmp_path / 'ppl'}"]
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert "kl_blocks=free beyond sink=1, local=1" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "ppl").exists()
