"""Where the library talks to people: one rich console and its progress bars.

Library code reports progress here; result tables, JSON files and exit codes belong to the
recipes (``seerflex.recipes``).
"""

from __future__ import annotations

import sys

from rich.console import Console
from rich.markup import escape
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn, TimeElapsedColumn, TimeRemainingColumn

# redirected output keeps wide tables readable (rich falls back to 80 columns without a terminal)
console = Console(width=None if sys.stdout.isatty() else 160)


def progress(*, transient: bool = True, disable: bool = False) -> Progress:
    """A progress display with a bar, counts and times, on the shared console."""
    return Progress(TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
                    TextColumn("{task.fields[info]}"), TimeElapsedColumn(), TimeRemainingColumn(),
                    console=console, transient=transient, disable=disable)


def warn(message: str) -> None:
    """One yellow line, never wrapped, so a log file keeps it whole."""
    console.print(f"[yellow]warning:[/yellow] {escape(message)}", soft_wrap=True, highlight=False)
