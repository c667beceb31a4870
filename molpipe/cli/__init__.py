"""What the molpipe commands share: the consoles, one-line errors, progress bars."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)

console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print one red error line (no traceback) and exit with ``code``."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


def check_placement(text: str | None) -> None:
    """Fail early on a --placement that names an unknown stage or repeats one."""
    if text is None:
        return
    from molpipe.nn.network import STAGES
    from molpipe.runtime.placement import parse_placement

    try:
        parse_placement(text, list(STAGES), complete=False)
    except ValueError as err:
        fail(f"--placement: {err}")


def featurize_bar():
    """A transient progress bar on stderr, refreshed by hand (no thread: pools can fork)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True, auto_refresh=False)


def bar_callback(bar, task):
    """``progress(done, total)`` that moves ``task`` of ``bar`` and shows molecules/s."""
    def progress(done: int, total: int) -> None:
        rate = done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} mol/s")
        bar.refresh()
    return progress
