"""molpipe preprocess and molpipe datasets: a file featurized once into a store, and the
bundled data sets."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.table import Table

from molpipe.cli import bar_callback, console, fail, featurize_bar
from molpipe.data.errors import DataError
from molpipe.training.settings import DEFAULTS


def preprocess(
    input: Annotated[str, typer.Argument(
        help="CSV, SMILES (.smi), SDF or Parquet file (gzip too), or a bundled data set name.")],
    output: Annotated[Path, typer.Option("-o", "--output", help="Store directory to write.")],
    smiles_column: Annotated[Optional[str], typer.Option(
        help="CSV column holding SMILES (default: the column named 'smiles').")] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Target column/property; repeat for several (default: the bundled set's "
             "targets, else every numeric column).")] = None,
    min_rounds: Annotated[int, typer.Option(help="Fewest propagation rounds per molecule.")] = DEFAULTS.min_rounds,
    max_rounds: Annotated[int, typer.Option(help="Most propagation rounds per molecule.")] = DEFAULTS.max_rounds,
    jobs: Annotated[int, typer.Option(help="Featurizing processes.")] = 2,
) -> None:
    """Featurize a data file once into a graph store; failing rows go to rejects.csv.

    An interrupted run (a cut .gz file, Ctrl-C, a kill) keeps what it wrote; the same command
    again resumes after it.

    Example: molpipe preprocess datasets/esol.csv -o stores/esol --target measured_log_solubility
    """
    from molpipe.data.build import build_store
    from molpipe.data.registry import resolve_source

    try:
        path, _ = resolve_source(input)
        with featurize_bar() as bar:     # no refresh thread: the featurizing processes can fork
            task = bar.add_task("featurizing", total=None, rate="")
            summary = build_store(path, output, smiles_column=smiles_column, targets=target,
                                  min_rounds=min_rounds, max_rounds=max_rounds, n_jobs=jobs,
                                  progress=bar_callback(bar, task),
                                  notice=lambda text: console.print(text, soft_wrap=True))
    except DataError as err:
        fail(str(err))
    except ValueError as err:                          # bad option values (rounds, ...)
        fail(str(err))
    if summary.get("resumed_from_row"):
        console.print(f"resumed after row {summary['resumed_from_row']} of an interrupted run",
                      soft_wrap=True)
    console.print(f"[bold]{summary['store']}[/bold]: {summary['rows_read']} rows read, "
                  f"{summary['rows_kept']} kept, {summary['rows_rejected']} rejected "
                  f"({summary['mols_per_s']:.0f} molecules/s, {summary['seconds']:.1f} s)",
                  soft_wrap=True)
    console.print(f"targets: {', '.join(summary['targets']) or 'none'}", soft_wrap=True)
    console.print(f"rejects (row, smiles, reason): {summary['rejects']}", soft_wrap=True)
    n_cells = sum(f["count"] for f in summary.get("targets_not_numbers", {}).values())
    if n_cells:
        console.print(f"{n_cells} target cell(s) not numbers, read as missing (row, target, "
                      f"value): {Path(summary['store']) / 'rejected_cells.csv'}", soft_wrap=True)


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
