"""Where the library talks to people: one rich console and its progress bars.

Library code reports progress here; result tables, JSON files and exit codes belong to the
recipes (``seerflex.recipes``).
"""

from __future__ import annotations

import sys
import time

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# redirected output keeps wide tables readable (rich falls back to 80 columns without a terminal)
console = Console(width=None if sys.stdout.isatty() else 160)


class _LoggedProgress(Progress):
    """Progress that also logs a plain line every ``every`` seconds when the console is not a terminal.

    Why: without a terminal rich draws nothing until the bar stops, so a log of a run that is cut
    (a device call's time limit) would not say how far it got.
    """

    def __init__(self, *columns, every: float, **kwargs) -> None:
        super().__init__(*columns, **kwargs)
        self.every, self._last = every, float("-inf")

    def update(self, task_id, **kwargs) -> None:  # type: ignore[override]
        super().update(task_id, **kwargs)
        self._log(task_id)

    def advance(self, task_id, advance: float = 1) -> None:
        super().advance(task_id, advance)
        self._log(task_id)

    def _log(self, task_id) -> None:
        drawn = self.console.is_terminal and not self.console.is_dumb_terminal  # rich's own condition for a live bar
        with self._lock:
            task = self._tasks[task_id]
            if self.disable or drawn or (time.monotonic() - self._last < self.every and not task.finished):
                return
            self._last = time.monotonic()
        total = "" if task.total is None else f"/{task.total:g}"
        self.console.print(f"{task.description} {task.completed:g}{total} {task.fields.get('info', '')}".rstrip(),
                           soft_wrap=True, highlight=False, markup=False)


def progress(*, transient: bool = True, disable: bool = False, every: float = 30.0) -> Progress:
    """A progress display with a bar, counts and times, on the shared console (a line per ``every`` s in logs)."""
    return _LoggedProgress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                           TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                           console=console, transient=transient, disable=disable, every=every)


def warn(message: str) -> None:
    """One yellow line, never wrapped, so a log file keeps it whole."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)
