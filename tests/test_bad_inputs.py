"""Every bad input we know of, in one place: each gets one clear error (or warning) naming the problem.

The README counts the cases collected here.
"""

from __future__ import annotations

import json
import time

import pytest
import torch

from models import CharTokenizer, small_llama, tiny_model
from seerflex import (RuntimeOptions, SeerFlexAttention, SeerFlexConfig, Threshold, TopK, TopP, as_policy,
                      get_seerflex_model)
from seerflex.cli import main as cli_main
from seerflex.hf import SeerFlexModel
from seerflex.policies import policy_from_dict
from seerflex.recipes.config import parse_recipe
from seerflex.runtime import Runtime
from test_cli import Knobs
from test_distill import SEERFLEX, recipe


def layer() -> SeerFlexAttention:
    return SeerFlexAttention(SeerFlexConfig(block_size=32), 4, 2, 64, runtime=Runtime(RuntimeOptions(dense_below=0)))


def qkv(**changes):
    tensors = dict(zip("qkv", (torch.randn(1, h, 128, 64) for h in (4, 2, 2))))
    return {**tensors, **changes}


def call_layer(**changes):
    t = qkv(**changes)
    return layer()(t["q"], t["k"], t["v"])


def with_nan(name: str) -> torch.Tensor:
    t = torch.randn(1, 4 if name == "q" else 2, 128, 64)
    t[0, 0, 5, 0] = float("nan")
    return t


def set_policy(value):
    attn = layer()
    attn.policy = value
    return attn.policy


LIBRARY = [
    (lambda: TopK(), "exactly one"),
    (lambda: TopK(0.1), "whole number.*TopK.density=0.1"),
    (lambda: TopK(density=1.5), "density"),
    (lambda: Threshold(-1), "threshold"),
    (lambda: TopP(float("nan")), "p must"),
    (lambda: TopK(k=2, sink=-1), "sink"),
    (lambda: policy_from_dict({"type": "bottomk"}), "unknown policy"),
    (lambda: as_policy("topk:abc"), "'topk:abc'.*not a number"),
    (lambda: as_policy("bottomk:0.1"), "unknown policy 'bottomk'"),
    (lambda: as_policy("topk:0.1:sinks=2"), "bad policy spec"),
    (lambda: set_policy(3), "a policy is a seerflex Policy"),
    (lambda: SeerFlexConfig(block_size=48), "block_size"),
    (lambda: SeerFlexConfig(gate_type="Qavg_Kmedian"), "unknown gate type"),
    (lambda: SeerFlexConfig.from_dict({"gate": 1}), "unknown SeerFlexConfig"),
    (lambda: SeerFlexConfig.from_dict({"compile": "auto"}), "runtime options"),
    (lambda: RuntimeOptions(compile="fast"), "compile mode"),
    (lambda: RuntimeOptions(backend="cuda"), "backend"),
    (lambda: RuntimeOptions(dense_below=-5), "dense_below"),
    (lambda: RuntimeOptions(check_finite="yes"), "check_finite"),
    (lambda: SeerFlexAttention(SeerFlexConfig(), 4, 2, 63), "head_dim must be even"),
    (lambda: SeerFlexAttention(SeerFlexConfig(), 4, 3, 64), "multiple of num_kv_heads"),
    (lambda: call_layer(q=torch.randn(1, 3, 128, 64)), "query / 2 KV heads"),
    (lambda: call_layer(v=torch.randn(1, 2, 100, 64)), "mismatched"),
    (lambda: call_layer(q=torch.randint(0, 9, (1, 4, 128, 64)), k=torch.randint(0, 9, (1, 2, 128, 64))),
     "floating point"),
    (lambda: call_layer(q=with_nan("q")), "NaN in the gate's block scores"),
    (lambda: call_layer(v=with_nan("v")), "NaN in V"),
    (lambda: layer()(*qkv().values(), attention_mask=torch.ones(1, 7)), "attention_mask"),
    (lambda: parse_recipe(Knobs, ["steps=abc"], prog="t"), "t: steps: expected a whole number, got 'abc'"),
    (lambda: parse_recipe(Knobs, ["lr=fast"], prog="t"), "t: lr: expected a number"),
    (lambda: parse_recipe(Knobs, ["stepz=3"], prog="t"), "unknown key"),
    (lambda: parse_recipe(Knobs, ["--check", "maybe"], prog="t"), "expected true or false"),
    (lambda: parse_recipe(Knobs, ["lengths=[1,x]"], prog="t"), "lengths: expected a whole number"),
    (lambda: wrapped_overrides({}), "names no layer"),
]


def wrapped_overrides(policy):
    sm = get_seerflex_model(small_llama(), SeerFlexConfig(block_size=32, gate_hidden_size=16))
    with sm.overrides(policy=policy):
        pass


@pytest.mark.parametrize(("make", "message"), LIBRARY)
def test_library_rejects_with_a_clear_error(make, message):
    with pytest.raises((ValueError, TypeError), match=message):
        make()


CLI = [
    (["eval", "ppl", "policies=topk:abc"], "'topk:abc'"),
    (["eval", "ppl", "--policies", "topk:0.1,topp:density=x"], "not a number"),
    (["eval", "ppl", "scorers=dense,bm25"], "unknown scorer"),
    (["eval", "ppl", "--prefix", "512", "--window", "256"], "prefix (512)"),
    (["eval", "sparsity", "target=sum"], "target must be mass or max"),
    (["eval", "budget", "scorer=pooled", "save_adapter=x"], "use scorer=gate"),
    (["eval", "summarise"], "unknown eval command"),
    (["distill", "steps=abc"], "steps: expected a whole number"),
    (["distill", "steps=0"], "steps must be >= 1"),
    (["distill", "target=mean"], "target must be max or mass"),
    (["distill", "row_focus=-1"], "row_focus must be a finite number >= 0"),
    (["distill", "kl_blocks=some"], "kl_blocks must be all or free"),
    (["distill", "seerflex.block_size=48"], "block_size must be one of"),
    (["distill", "no_such.yaml"], "recipe config no_such.yaml does not exist"),
    (["distill", "a", "b"], "unexpected argument 'a'"),
    (["bench", "flops"], "unknown benchmark"),
    (["bench", "kernel", "compile=fast"], "unknown compile mode"),
    (["convert"], "needs SOURCE and OUTPUT"),
    (["nope"], "unknown command"),
]


@pytest.mark.parametrize(("argv", "message"), CLI)
def test_cli_errors_are_one_line_with_exit_code_2_before_any_loading(argv, message, capsys):
    tic = time.perf_counter()
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err
    assert time.perf_counter() - tic < 5  # checked before a model is loaded


def test_broken_yaml_names_file_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("steps: 5\nlr: [1,\n")
    with pytest.raises(ValueError, match=r"bad.yaml is not valid YAML \(line"):
        parse_recipe(Knobs, [str(config)], prog="t")


@pytest.fixture
def adapter(tmp_path):
    get_seerflex_model(small_llama(), SeerFlexConfig(block_size=32, gate_hidden_size=16)).save_pretrained(tmp_path)
    return tmp_path


def test_damaged_adapter_files_are_named(adapter):
    weights, config = adapter / "adapter_model.safetensors", adapter / "adapter_config.json"
    data = bytearray(weights.read_bytes())
    data[-3] ^= 0x10  # one flipped bit inside a gate weight
    weights.write_bytes(bytes(data))
    with pytest.raises(ValueError, match="does not match the checksum"):
        SeerFlexModel.from_pretrained(small_llama(), adapter)
    weights.write_bytes(bytes(data[:100]))  # truncated, and an adapter without a checksum (older versions)
    config.write_text(json.dumps({k: v for k, v in json.loads(config.read_text()).items() if k != "weights_sha256"}))
    with pytest.raises(ValueError, match="adapter_model.safetensors is not a readable safetensors file"):
        SeerFlexModel.from_pretrained(small_llama(), adapter)
    config.write_text('{"peft_type": "SEERFLEX",\n "format_version": 1,,}')
    with pytest.raises(ValueError, match=r"adapter_config.json is not valid JSON \(line 2"):
        SeerFlexModel.from_pretrained(small_llama(), adapter)


def test_a_missing_local_folder_fails_at_once_without_hub_retries():
    tic = time.perf_counter()
    with pytest.raises(FileNotFoundError, match="no folder 'my-gates'"):
        SeerFlexModel.from_pretrained(small_llama(), "my-gates")
    assert time.perf_counter() - tic < 2


def test_resume_refuses_other_gates_and_says_what_changed(tmp_path, capsys):
    text = tmp_path / "book.txt"
    text.write_text("It is a truth universally acknowledged. " * 200)
    from seerflex.recipes.distill import train

    train(recipe(tmp_path, text, steps=3), small_llama(), CharTokenizer())
    other = {**SEERFLEX, "gate_type": "Qavgmax_Kmaxminavg"}
    with pytest.raises(ValueError, match="another gate config.*gate_type"):
        train(recipe(tmp_path, text, steps=4, resume=True, seerflex=other), small_llama(), CharTokenizer())
    train(recipe(tmp_path, text, steps=4, lr=5e-3, resume=True), small_llama(), CharTokenizer())
    out = " ".join(capsys.readouterr().out.split())  # the console wraps long lines
    assert "resuming with changed settings" in out and "lr 0.01 -> 0.005" in out and "steps 3 -> 4" in out
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4]
    train(recipe(tmp_path / "fresh", text, steps=2, resume=True), small_llama(), CharTokenizer())
    assert "holds no checkpoint: starting at step 0" in " ".join(capsys.readouterr().out.split())


def test_metrics_hold_each_step_once_after_a_kill_between_checkpoints(tmp_path, monkeypatch):
    text = tmp_path / "book.txt"
    text.write_text("It is a truth universally acknowledged. " * 200)
    import seerflex.recipes.distill as distill

    real = distill.Collector.total
    calls = []

    def die_at_step_5(self, scale=10.0):
        calls.append(1)
        if len(calls) == 5:  # steps 1-4 logged, checkpoint at 3: step 4 is logged twice without the fix
            raise KeyboardInterrupt
        return real(self, scale)

    monkeypatch.setattr(distill.Collector, "total", die_at_step_5)
    with pytest.raises(KeyboardInterrupt):
        distill.train(recipe(tmp_path, text), small_llama(), CharTokenizer())
    monkeypatch.setattr(distill.Collector, "total", real)
    distill.train(recipe(tmp_path, text, resume=True), small_llama(), CharTokenizer())
    steps = [json.loads(line)["step"] for line in (tmp_path / "run" / "metrics.jsonl").read_text().splitlines()]
    assert steps == [1, 2, 3, 4, 5, 6]


def test_a_model_with_only_sliding_window_layers_warns():
    model = tiny_model("gemma3", layer_types=["sliding_attention", "sliding_attention"])
    with pytest.warns(UserWarning, match="uses a sliding window, so no layer gets a gate"):
        get_seerflex_model(model, SeerFlexConfig(block_size=32, gate_hidden_size=32))


def test_calibration_far_from_the_request_says_why(capsys):
    from seerflex.evaluation.calibration import calibrate

    sm = get_seerflex_model(small_llama(), SeerFlexConfig(block_size=32, gate_hidden_size=16),
                            runtime=RuntimeOptions(dense_below=0))
    _, density = calibrate(sm, "pooled", TopP(0.9), 0.05, [torch.randint(1, 90, (256,))], iters=3)
    assert density > 0.3
    assert "always-on blocks" in " ".join(capsys.readouterr().out.split())


def test_a_fresh_run_never_overwrites_an_earlier_one(tmp_path):
    from seerflex.recipes.distill import train

    text = tmp_path / "book.txt"
    text.write_text("It is a truth universally acknowledged. " * 200)
    train(recipe(tmp_path, text, steps=3), small_llama(), CharTokenizer())
    with pytest.raises(ValueError, match="already holds a run; resume=true continues it, overwrite=true"):
        train(recipe(tmp_path, text, steps=3), small_llama(), CharTokenizer())
    metrics = tmp_path / "run" / "metrics.jsonl"
    metrics.write_text(metrics.read_text() + '{"step": 4, "lo')  # a kill in the middle of a line
    other_policy = {**SEERFLEX, "policy": "topp:0.9"}  # the gates are the same: resuming is fine
    train(recipe(tmp_path, text, steps=4, resume=True, seerflex=other_policy), small_llama(), CharTokenizer())
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2, 3, 4]
    train(recipe(tmp_path, text, steps=2, overwrite=True), small_llama(), CharTokenizer())
    assert [json.loads(line)["step"] for line in metrics.read_text().splitlines()] == [1, 2]


def test_a_crash_between_the_checkpoint_renames_keeps_the_previous_one(tmp_path):
    from seerflex.distill import checkpoint

    target = tmp_path / "checkpoint"
    checkpoint.save(target, {"w": torch.ones(2)}, {"step": 3})
    target.rename(tmp_path / ".checkpoint.old")  # what save leaves if it dies between its two renames
    assert checkpoint.latest(target) == tmp_path / ".checkpoint.old"
    assert checkpoint.load(checkpoint.latest(target))[1]["step"] == 3


def test_flash_needs_half_precision_and_auto_knows_it(monkeypatch):
    import seerflex.flex as flex

    monkeypatch.setattr(flex, "flash_unavailable", lambda device: None)
    cuda = torch.device("cuda")
    assert flex.kernel_backend("auto", cuda, compiled=True, plain_mask=True, dtype=torch.float32) == "triton"
    with pytest.raises(ValueError, match="float16/bfloat16 inputs, got torch.float32"):
        flex.kernel_backend("flash", cuda, compiled=True, plain_mask=True, dtype=torch.float32)


def test_set_policy_takes_any_iterable_of_layers_and_string_layer_keys():
    sm = get_seerflex_model(small_llama(), SeerFlexConfig(block_size=32, gate_hidden_size=16))
    sm.set_policy("topp:0.8", layers=(i for i in [0]))
    assert sm.peft_config["default"].layer_policies == {0: TopP(0.8)}
    with sm.overrides(policy={"1": "topk:0.5"}):
        assert sm.peft_config["default"].layer_policies[1] == TopK(density=0.5) and sm.sparse_layers == {1}
