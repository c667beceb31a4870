"""molpipe command line: parses options, calls the library, prints."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table

from molpipe.data.errors import DataError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Graph neural networks on molecules, trained with asynchronous "
                       "model-parallel pipelining.")
console = Console()
err_console = Console(stderr=True)


def fail(message: str, code: int = 2) -> None:
    """Print one red error line (no traceback) and exit with ``code``."""
    err_console.print(f"[red]error:[/red] {escape(message)}", soft_wrap=True, highlight=False)
    raise typer.Exit(code)


@app.command()
def preprocess(
    input: Annotated[str, typer.Argument(help="CSV/SDF file, or a bundled data set name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Store directory to write.")],
    smiles_column: Annotated[Optional[str], typer.Option(
        help="CSV column holding SMILES (default: the column named 'smiles').")] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Target column/property; repeat for several (default: the bundled set's "
             "targets, else every numeric column).")] = None,
    min_rounds: Annotated[int, typer.Option(help="Fewest propagation rounds per molecule.")] = 2,
    max_rounds: Annotated[int, typer.Option(help="Most propagation rounds per molecule.")] = 6,
    jobs: Annotated[int, typer.Option(help="Featurizing processes.")] = 2,
) -> None:
    """Featurize a CSV/SDF file once into a graph store; failing rows go to rejects.csv.

    Example: molpipe preprocess datasets/esol.csv -o stores/esol --target measured_log_solubility
    """
    from molpipe.data.build import build_store
    from molpipe.data.registry import resolve_source

    columns = [TextColumn("featurizing"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    try:
        path, _ = resolve_source(input)
        with Progress(*columns, console=err_console, transient=True) as bar:
            task = bar.add_task("featurize", total=None, rate="")

            def progress(done: int, total: int) -> None:
                rate = done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} mol/s")

            summary = build_store(path, output, smiles_column=smiles_column, targets=target,
                                  min_rounds=min_rounds, max_rounds=max_rounds, n_jobs=jobs,
                                  progress=progress)
    except DataError as err:
        fail(str(err))
    except ValueError as err:                          # bad option values (rounds, ...)
        fail(str(err))
    console.print(f"[bold]{summary['store']}[/bold]: {summary['rows_read']} rows read, "
                  f"{summary['rows_kept']} kept, {summary['rows_rejected']} rejected "
                  f"({summary['mols_per_s']:.0f} molecules/s, {summary['seconds']:.1f} s)",
                  soft_wrap=True)
    console.print(f"targets: {', '.join(summary['targets']) or 'none'}", soft_wrap=True)
    if summary["rows_rejected"]:
        console.print(f"rejects (row, smiles, reason): {summary['rejects']}", soft_wrap=True)


@app.command()
def datasets() -> None:
    """List the bundled data sets (name, rows, targets, units, source).

    Example: molpipe datasets
    """
    from molpipe.data.registry import list_datasets

    try:
        entries = list_datasets()
    except DataError as err:
        fail(str(err))
    table = Table(title="bundled data sets")
    for column in ("name", "rows", "task", "targets", "file", "source"):
        table.add_column(column, overflow="fold")
    for e in entries:
        table.add_row(e.name, str(e.rows), e.task, " ".join(e.targets), e.path.name,
                      e.source["repository"])
    console.print(table)


if __name__ == "__main__":
    app()
