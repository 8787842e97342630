"""Progress in logs: without a terminal rich draws nothing until a bar stops, so a cut run's log must still say how far
it got."""

from __future__ import annotations

from seerflex import console as shared


def run_bar(every: float) -> str:
    assert not shared.console.is_terminal  # pytest captures the output
    with shared.console.capture() as captured:
        with shared.progress(every=every) as bar:
            task = bar.add_task("distill", total=3, info="")
            for i in range(3):
                bar.update(task, advance=1, info=f"loss {i}")
    return captured.get()


def test_progress_logs_a_plain_line_per_interval_without_a_terminal():
    every_time = run_bar(every=0.0)
    assert "distill 1/3 loss 0" in every_time and "distill 3/3 loss 2" in every_time
    once = run_bar(every=3600.0)
    assert "distill 1/3 loss 0" in once and "2/3" not in once and "3/3 loss 2" not in once
