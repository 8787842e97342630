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


@pytest.mark.parametrize(("argv", "message"), [
    (["steps=abc"], "t: steps: expected a whole number, got 'abc'"),
    (["lr=fast"], "t: lr: expected a number"),
    (["stepz=3"], "unknown key"),
    (["--check", "maybe"], "expected true or false"),
    (["lengths=[1,x]"], "lengths: expected a whole number"),
])
def test_bad_values_name_the_key(argv, message):
    with pytest.raises(ValueError, match=message):
        parse_recipe(Knobs, argv, prog="t")


def test_broken_yaml_names_file_and_line(tmp_path):
    config = tmp_path / "bad.yaml"
    config.write_text("steps: 5\nlr: [1,\n")
    with pytest.raises(ValueError, match=r"bad.yaml is not valid YAML \(line"):
        parse_recipe(Knobs, [str(config)], prog="t")


@pytest.mark.parametrize(("argv", "message"), [
    (["eval", "ppl", "policies=topk:abc"], "'topk:abc'"),
    (["eval", "ppl", "scorers=dense,bm25"], "unknown scorer"),
    (["eval", "ppl", "prefix=512", "window=256"], "prefix (512)"),
    (["eval", "summarise"], "unknown eval command"),
    (["distill", "steps=abc"], "steps: expected a whole number"),
    (["distill", "no_such.yaml"], "recipe config no_such.yaml does not exist"),
    (["distill", "a", "b"], "unexpected argument 'a'"),
    (["bench", "flops"], "unknown benchmark"),
    (["convert"], "needs SOURCE and OUTPUT"),
    (["nope"], "unknown command"),
])
def test_cli_errors_are_one_line_with_exit_code_2(argv, message, capsys):
    assert cli_main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and len(err.strip().splitlines()) == 1 and "Traceback" not in err


@pytest.mark.parametrize("argv", [["--help"], ["eval", "--help"], ["eval", "ppl", "--help"], ["bench", "--help"],
                                  ["bench", "kernel", "--help"], ["distill", "--help"], ["convert", "--help"]])
def test_help_exits_0_and_shows_keys(argv, capsys):
    assert cli_main(argv) == 0
    out = capsys.readouterr().out
    assert "usage" in out.lower()
    if argv[-2:] == ["distill", "--help"]:
        assert "[key=value ...]" in out and "seq_len" in out
