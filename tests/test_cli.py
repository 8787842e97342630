"""The command line: one dispatcher, recipes configured by YAML + key=value, one-line errors with exit code 2."""

from __future__ import annotations

from dataclasses import dataclass

import pytest

from seerflex.cli import main as cli_main
from seerflex.recipes.config import knob, parse_recipe


@dataclass
class Knobs:
    steps: int = knob(10, "steps")
    lr: float = knob(1e-3, "learning rate")
    check: bool = knob(True, "check")
    lengths: list[int] = knob([8192], "lengths")
    policies: list[str] = knob(["topk:0.1"], "policies")
    name: str | None = knob(None, "name")
    extra: dict = knob({}, "nested")


def test_yaml_then_key_value_then_flags(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("steps: 5\nlengths: [1024, 2048]\nextra: {a: 1}\n")
    knobs = parse_recipe(Knobs, [str(config), "lr=0.01", "--policies", "topk:0.1,topp:density=0.2", "--no-check",
                                 "extra.b=2", "--lengths", "4096", "8192", "name=run"], prog="t")
    assert knobs == Knobs(steps=5, lr=0.01, check=False, lengths=[4096, 8192],
                          policies=["topk:0.1", "topp:density=0.2"], name="run", extra={"a": 1, "b": 2})
    assert parse_recipe(Knobs, [], prog="t") == Knobs()


def test_numbers_text_and_empty_values_read_as_meant(tmp_path):
    config = tmp_path / "r.yaml"
    config.write_text("lr: 1e-3\nlengths: [2e3]\n")  # YAML 1.1 leaves 1e-3 as text
    knobs = parse_recipe(Knobs, [str(config)], prog="t")
    assert knobs.lr == 1e-3 and knobs.lengths == [2000]
    assert parse_recipe(Knobs, ["--lr", "-1e-4", "name=none"], prog="t") == Knobs(lr=-1e-4, name=None)
    assert parse_recipe(Knobs, ["name=0123", "policies=no"], prog="t") == Knobs(name="0123", policies=["no"])
    assert parse_recipe(Knobs, ["policies=[topk:0.1,topp:0.9]"], prog="t").policies == ["topk:0.1", "topp:0.9"]


HELP = [["--help"], ["eval", "--help"], ["bench", "--help"], ["distill", "--help"], ["convert", "--help"], ["corpus", "--help"],
        ["finetune", "--help"],
        ["demo", "--help"], ["bench", "kernel", "--help"], ["bench", "ttft", "--help"],
        *(["eval", sub, "--help"] for sub in ("ppl", "passkey", "needle", "ruler", "sparsity", "budget"))]


@pytest.mark.parametrize("argv", HELP, ids=" ".join)
def test_every_command_has_help_that_exits_0(argv, capsys):
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert out.lower().startswith("usage: seerflex") and "[key=value" in out
    if len(argv) > 2 or argv[0] in ("distill", "convert", "demo", "corpus", "finetune"):  # a recipe: its keys with their meaning
        assert "key" in out and "meaning" in out
