"""molpipe command line: the typer app; parses options, calls the library, prints.

preprocess, datasets and train are here; the measuring commands (bench, simulate) and the
ones that use a trained run (predict, evaluate, plot) are in ``molpipe.commands``.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from molpipe.commands import (bar_callback, check_placement, console, err_console, fail,
                              featurize_bar)
from molpipe.commands.measure import bench, simulate
from molpipe.commands.model import evaluate, plot, predict
from molpipe.data.errors import DataError

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Graph neural networks on molecules, trained with asynchronous "
                       "model-parallel pipelining.")


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

    try:
        path, _ = resolve_source(input)
        with featurize_bar() as bar:     # no refresh thread: the featurizing processes can fork
            task = bar.add_task("featurizing", total=None, rate="")
            summary = build_store(path, output, smiles_column=smiles_column, targets=target,
                                  min_rounds=min_rounds, max_rounds=max_rounds, n_jobs=jobs,
                                  progress=bar_callback(bar, task))
    except DataError as err:
        fail(str(err))
    except ValueError as err:                          # bad option values (rounds, ...)
        fail(str(err))
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


def _default_run_dir(data: str) -> Path:
    """runs/<data set name>, or the first free runs/<name>-N."""
    stem = Path(data).stem if Path(data).suffix else Path(data).name
    base = Path("runs") / (stem or "run")
    out, n = base, 1
    while out.exists():
        n += 1
        out = base.with_name(f"{base.name}-{n}")
    return out


@app.command()
def train(
    data: Annotated[Optional[str], typer.Argument(
        help="Bundled data set name (esol, freesolv, lipo, qm9), CSV/SDF path or graph store.")] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Target column; repeat for several (default: the bundled set's targets, "
             "else every numeric column).")] = None,
    smiles_column: Annotated[Optional[str], typer.Option(help="SMILES column of a CSV.")] = None,
    task: Annotated[Optional[str], typer.Option(
        help="regression or classification (default: inferred from the targets).")] = None,
    split: Annotated[str, typer.Option(
        help="random, scaffold, or a JSON file with train/val/test row indices.")] = "random",
    seed: Annotated[int, typer.Option(help="Seed of the split, the initialization and the data order.")] = 0,
    epochs: Annotated[int, typer.Option(help="Most epochs to train.")] = 50,
    patience: Annotated[int, typer.Option(help="Stop after this many epochs without a better validation score.")] = 20,
    hidden: Annotated[int, typer.Option(help="Hidden size d_h.")] = 128,
    aggregation: Annotated[str, typer.Option(
        help="Readout over a molecule's atoms: mean (intensive properties), sum or norm (sum / "
             "100: extensive ones, sums over atoms), attention (learned per-atom weights), "
             "mean+norm (both side by side, for a property of unknown kind).")] = "mean+norm",
    dropout: Annotated[float, typer.Option(help="Dropout in the readout MLP while training.")] = 0.0,
    propagate: Annotated[str, typer.Option(
        help="Message passing: split (between atoms, a GRU update; a round is two stages) or "
             "bond (along directed bonds, leaving out the bond back, as chemprop's D-MPNN).")] = "split",
    readout_features: Annotated[bool, typer.Option(
        help="The readout reads each atom's input features beside its propagated state.")] = True,
    weight_decay: Annotated[float, typer.Option(help="L2 weight decay of every parameter (Adam).")] = 0.0,
    average: Annotated[float, typer.Option(
        help="Each stage keeps a moving average of its parameters with this decay per update "
             "(0: none); the averages are evaluated and saved.")] = 0.0,
    target_scaling: Annotated[str, typer.Option(
        help="Standardize regression targets by their mean and SD (standard) or by median and "
             "IQR (robust: a few wild values do not squash the rest).")] = "standard",
    baseline: Annotated[str, typer.Option(
        help="Regression: additive (fit each target to the molecule's summed atom features, "
             "a group-contribution model; the network learns what it leaves), none, or auto "
             "(additive for a target the fit carries at least 90 % of on the training split: "
             "an extensive property).")] = "auto",
    rounds: Annotated[int, typer.Option(help="Most propagation rounds per molecule.")] = 6,
    lr: Annotated[float, typer.Option(help="Peak learning rate (Adam).")] = 1e-3,
    schedule: Annotated[str, typer.Option(
        help="async (each worker updates itself), sync (all update together) or reference "
             "(sequential).")] = "async",
    max_active_keys: Annotated[int, typer.Option(help="Most instances in flight at once (mak).")] = 4,
    min_update_frequency: Annotated[int, typer.Option(
        help="Gradients a worker gathers before it updates (muf).")] = 1,
    molecules_per_instance: Annotated[Optional[int], typer.Option(
        help="Molecules packed into one instance (sharing one plan); default: at least 16, "
             "more for small molecules (about 212 heavy atoms per instance) while an epoch keeps "
             "at least 64 instances.")] = None,
    weight_stashing: Annotated[bool, typer.Option(
        help="async: each backward uses the weights its forward used (PipeDream).")] = True,
    backend: Annotated[str, typer.Option(
        help="thread (one machine) or mpi: under mpiexec -n K+1, rank 0 trains and K ranks "
             "host the workers.")] = "thread",
    placement: Annotated[Optional[str], typer.Option(
        help="Stages per worker, workers separated by '/': e.g. "
             "'embed,message,readout/update,rings,loss' (default: one worker per stage).")] = None,
    on_nonfinite: Annotated[str, typer.Option(
        help="NaN/inf loss, activations or gradients: stop the run with an error naming the "
             "molecule, or skip that instance (stop, skip).")] = "stop",
    stall_timeout: Annotated[float, typer.Option(
        help="Seconds without any pipeline message before the run stops as stalled.")] = 300.0,
    out: Annotated[Optional[Path], typer.Option(help="Run directory to write (default: runs/<data>).")] = None,
    checkpoint_minutes: Annotated[Optional[float], typer.Option(
        help="Also checkpoint inside an epoch every this many minutes (default: after each epoch only).")] = None,
    resume: Annotated[Optional[Path], typer.Option(
        help="Continue the run in this directory from its last checkpoint (same settings).")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing run directory.")] = False,
    quiet: Annotated[bool, typer.Option(help="No live display.")] = False,
) -> None:
    """Train a model on DATA and write a run directory (model, report.json, metrics.csv, split).

    Example: molpipe train esol --epochs 30 --out runs/esol
    (after a crash: molpipe train --resume runs/esol)
    """
    import shutil

    from molpipe.checkpoint import CheckpointError
    from molpipe.display import TrainDisplay
    from molpipe.model import ModelError
    from molpipe.runtime.control import PipelineError
    from molpipe.runtime.mpi import MPIUnavailable
    from molpipe.train import TrainConfig, train as run_training

    def run(config: TrainConfig, out: Path, resume: bool = False) -> None:
        display = TrainDisplay(console=console, quiet=quiet)
        try:
            report = run_training(config, out, progress=display, resume=resume)
        except (DataError, ModelError, PipelineError, CheckpointError, MPIUnavailable,
                ValueError) as err:
            display.close()
            fail(str(err))
        finally:
            display.close()
        if not report:               # an MPI worker rank (of a resumed run): rank 0 reports
            return
        try:
            from molpipe.plots import plot_run

            plots = plot_run(out)
        except Exception as err:                 # a chart must never lose a finished run
            err_console.print(f"[yellow]warning:[/yellow] plots not written ({escape(str(err))})")
            plots = []
        where = f" · {len(plots)} plots in {out / 'plots'}" if plots else ""
        console.print(f"run directory: [bold]{out}[/bold]{where}")

    if resume is not None:
        run(TrainConfig(), resume, resume=True)
        return
    if data is None:
        fail("give a data set (a bundled name such as esol, or a CSV/SDF file), or --resume RUN_DIR")

    from molpipe.settings import SettingsError

    try:   # every setting checked before any work, named as typed here
        config = TrainConfig(
            data=data, targets=target, smiles_column=smiles_column, task=task, split=split,
            seed=seed, epochs=epochs, patience=patience, hidden=hidden, aggregation=aggregation,
            dropout=dropout, weight_decay=weight_decay, readout_features=readout_features,
            average=average, propagate=propagate, target_scaling=target_scaling,
            baseline=baseline, max_rounds=rounds, min_rounds=min(2, rounds), lr=lr,
            schedule=schedule,
            max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
            molecules_per_instance=molecules_per_instance, backend=backend,
            on_nonfinite=on_nonfinite, stall_timeout=stall_timeout,
            weight_stashing=weight_stashing, checkpoint_minutes=checkpoint_minutes,
            placement=placement)
    except SettingsError as err:
        fail(str(err))
    check_placement(placement)
    if backend == "mpi":   # ranks > 0 serve rank 0's workers, then leave without a word
        from molpipe.runtime.mpi_rank import serve_unless_control

        try:
            if serve_unless_control():
                return
        except MPIUnavailable as err:
            fail(str(err))
    if out is None:
        out = _default_run_dir(data)
    elif out.exists() and any(out.iterdir()):
        if not overwrite:
            fail(f"{out} exists; pass --overwrite to replace it (or another --out)")
        shutil.rmtree(out)

    run(config, out)


app.command()(bench)
app.command()(simulate)
app.command()(predict)
app.command()(evaluate)
app.command()(plot)


if __name__ == "__main__":
    app()
