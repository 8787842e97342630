"""Progress in logs: without a terminal rich draws nothing until a bar stops, so a cut run's log must still say how far
it got; with a terminal, or on a process whose bar is disabled, no extra lines."""

from __future__ import annotations

import io

from rich.console import Console

from seerflex import console as shared


def run_bar(monkeypatch, every: float, *, terminal: bool = False, disable: bool = False, steps: int = 3) -> str:
    out = io.StringIO()
    monkeypatch.setattr(shared, "console", Console(file=out, width=160, force_terminal=terminal))
    with shared.progress(every=every, disable=disable) as bar:
        task = bar.add_task("distill", total=steps, info="")
        for i in range(steps):
            if i % 2:
                bar.advance(task)  # both ways of moving a bar log (the info stays the last update's)
            else:
                bar.update(task, advance=1, info=f"loss {i}")
    return out.getvalue()


def test_progress_logs_a_plain_line_per_interval_without_a_terminal(monkeypatch):
    every_time = run_bar(monkeypatch, every=0.0)
    assert "distill 1/3 loss 0" in every_time and "distill 2/3 loss 0" in every_time
    assert "distill 3/3 loss 2" in every_time
    once = run_bar(monkeypatch, every=3600.0, steps=4)
    assert "distill 1/4 loss 0" in once and "2/4" not in once and "3/4" not in once
    assert "distill 4/4 loss 2" in once  # the end is always logged


def test_no_plain_lines_on_a_terminal_or_when_disabled(monkeypatch):
    assert "distill 1/3" not in run_bar(monkeypatch, every=0.0, terminal=True)
    assert run_bar(monkeypatch, every=0.0, disable=True) == ""
