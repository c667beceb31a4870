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


def _check_placement(text: str | None) -> None:
    """Fail early on a --placement that names an unknown stage or repeats one."""
    if text is None:
        return
    from molpipe.pipeline_engine import STAGE_WEIGHTS
    from molpipe.runtime.placement import parse_placement

    try:
        parse_placement(text, list(STAGE_WEIGHTS), complete=False)
    except ValueError as err:
        fail(f"--placement: {err}")


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
        # no refresh thread: with none running, the featurizing processes can be forked
        with Progress(*columns, console=err_console, transient=True, auto_refresh=False) as bar:
            task = bar.add_task("featurize", total=None, rate="")

            def progress(done: int, total: int) -> None:
                rate = done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
                bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} mol/s")
                bar.refresh()

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

    if schedule not in ("async", "sync", "reference"):
        fail(f"--schedule must be async, sync or reference, not {schedule!r}")
    if on_nonfinite not in ("stop", "skip"):
        fail(f"--on-nonfinite must be stop or skip, not {on_nonfinite!r}")
    if not stall_timeout > 0:
        fail(f"--stall-timeout must be positive, not {stall_timeout}")
    if task is not None and task not in ("regression", "classification"):
        fail(f"--task must be regression or classification, not {task!r}")
    if backend not in ("thread", "mpi"):
        fail(f"--backend must be thread or mpi, not {backend!r}")
    _check_placement(placement)
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
    config = TrainConfig(data=data, targets=target, smiles_column=smiles_column, task=task,
                         split=split, seed=seed, epochs=epochs, patience=patience, hidden=hidden,
                         max_rounds=rounds, lr=lr, schedule=schedule,
                         max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
                         molecules_per_instance=molecules_per_instance, backend=backend,
                         on_nonfinite=on_nonfinite, stall_timeout=stall_timeout,
                         weight_stashing=weight_stashing, checkpoint_minutes=checkpoint_minutes,
                         placement=placement)
    run(config, out)


@app.command()
def bench(
    data: Annotated[str, typer.Argument(help="Bundled data set name, CSV/SDF path or graph store.")] = "esol",
    hidden: Annotated[int, typer.Option(help="Hidden size d_h.")] = 128,
    molecules_per_instance: Annotated[Optional[int], typer.Option(
        help="Molecules packed into one instance (default: as train chooses).")] = None,
    max_active_keys: Annotated[int, typer.Option(help="Most instances in flight (mak).")] = 4,
    min_update_frequency: Annotated[int, typer.Option(help="Gradients per update (muf).")] = 1,
    epochs: Annotated[int, typer.Option(help="Timed passes over the training split (schedules take turns).")] = 4,
    molecules: Annotated[Optional[int], typer.Option(help="Use only the first N training molecules.")] = None,
    replicate: Annotated[int, typer.Option(help="Repeat the training split N times (a larger workload).")] = 1,
    schedule: Annotated[Optional[list[str]], typer.Option(
        help="Schedules to run (repeat; default all): reference, sync (one update per mak "
             "instances), sync-each (one update per muf instances, as often as async), async, "
             "reference-x2 (two reference trainers on two threads: the machine's ceiling).")] = None,
    placement: Annotated[Optional[str], typer.Option(
        help="Stages per worker of the pipeline schedules, as for train.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write a PNG of the pipeline schedules' timelines of a short pass.")] = None,
) -> None:
    """Training molecules/s of every schedule on the same instances, in one process.

    Example: molpipe bench esol --json
    """
    import json

    from molpipe.bench import SCHEDULES, BenchConfig, bench as run_bench, schedule_settings
    from molpipe.display import utilization_table

    schedules = tuple(schedule or SCHEDULES)
    bad = [s for s in schedules if schedule_settings(s, max_active_keys, True) is None]
    if bad:
        fail(f"unknown schedule {bad[0]!r} (choose from {', '.join(SCHEDULES)}, "
             "or an async variant such as async-mak8, async-nostash)")
    if len(set(schedules)) != len(schedules):
        fail("a schedule is named twice")
    _check_placement(placement)
    config = BenchConfig(data=data, hidden=hidden, molecules_per_instance=molecules_per_instance,
                         max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
                         epochs=epochs, molecules=molecules, replicate=replicate, schedules=schedules,
                         placement=placement,
                         plot=str(plot) if plot else None)
    status = err_console.status("benchmarking", spinner="dots")
    status.start()
    try:
        result = run_bench(config, progress=lambda event, **kw: status.update(
            f"{kw['schedule']}: pass {kw['epoch']}/{epochs} took {kw['seconds']:.2f} s"))
    except DataError as err:
        status.stop()
        fail(str(err))
    status.stop()
    if json_out:
        print(json.dumps(result, indent=2))
        return
    table = Table(title=f"molpipe bench {data} (hidden {hidden}, "
                        f"{result['settings']['molecules_per_instance']} mol/instance, "
                        f"mak {max_active_keys}, muf {min_update_frequency})")
    for column in ("schedule", "instances/update", "molecules/s", "× reference", "async ×", "seconds"):
        table.add_column(column, justify="right")
    asy = result.get("async", {}).get("molecules_per_second")
    for name in schedules:
        r = result[name]
        per_update = r.get("instances_per_update", min_update_frequency if name != "reference" else 1)
        table.add_row(name, str(per_update), f"{r['molecules_per_second']:,.0f}",
                      f"{r.get('speedup_vs_reference', float('nan')):.2f}",
                      f"{asy / r['molecules_per_second']:.2f}" if asy else "", f"{r['seconds']:.2f}")
    console.print(table)
    for name in schedules:
        if result[name].get("utilization"):
            console.print(f"[bold]{name}[/bold] worker utilization")
            console.print(utilization_table(result[name]["utilization"], result[name].get("cpu")))


@app.command()
def simulate(
    data: Annotated[str, typer.Argument(help="Data set whose stage costs are measured (threads).")] = "qm9",
    workers: Annotated[Optional[list[int]], typer.Option(help="K values (repeat; default 1..64).")] = None,
    max_active_keys: Annotated[int, typer.Option(help="Most instances in flight (mak).")] = 8,
    latency: Annotated[float, typer.Option(help="Seconds a message takes between two workers.")] = 50e-6,
    overhead: Annotated[float, typer.Option(help="Receiver CPU seconds per message (decode).")] = 20e-6,
    molecules_per_instance: Annotated[int, typer.Option(help="Molecules packed into one instance.")] = 16,
) -> None:
    """Predict pipeline throughput for K workers from measured stage costs (discrete events).

    Example: molpipe simulate qm9 --max-active-keys 16 --latency 1e-4
    """
    from molpipe.simulate import measure_costs, predict_curve

    costs = measure_costs(data, size=molecules_per_instance)
    rows = predict_curve(costs, tuple(workers or (1, 2, 4, 6, 8, 16, 32, 64)), mak=max_active_keys,
                         latency=latency, overhead=overhead)
    table = Table(title=f"predicted throughput, {data}, mak {max_active_keys}, latency {latency:g} s")
    for column in ("workers", "used", "molecules/s", "busiest worker"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), str(r["used"]),
                      f"{r['instances_per_second'] * molecules_per_instance:,.0f}",
                      f"{r['max_utilization']:.0%}")
    console.print(table)


def _featurize_bar():
    """A transient progress bar on stderr, refreshed by hand (no thread: pools can fork)."""
    columns = [TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
               TextColumn("{task.fields[rate]}"), TimeElapsedColumn(), TimeRemainingColumn()]
    return Progress(*columns, console=err_console, transient=True, auto_refresh=False)


def _bar_callback(bar, task):
    def progress(done: int, total: int) -> None:
        rate = done / max(bar.tasks[task].elapsed or 0.0, 1e-9)
        bar.update(task, completed=done, total=total, rate=f"{rate:,.0f} mol/s")
        bar.refresh()
    return progress


@app.command()
def predict(
    smiles: Annotated[Optional[list[str]], typer.Argument(
        help="SMILES to predict (or give --input).", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Run directory written by `molpipe train`.")] = None,
    input: Annotated[Optional[Path], typer.Option(
        "--input", "-i", help="CSV (with a SMILES column) or SDF file to predict.")] = None,
    output: Annotated[Optional[str], typer.Option(
        "--output", "-o", help="CSV to write: the input columns, pred_<target> per target and "
                               "error ('-': standard output; default: <input>_predictions.csv).")] = None,
    smiles_column: Annotated[Optional[str], typer.Option(
        help="CSV column holding SMILES (default: the column named 'smiles').")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    jobs: Annotated[int, typer.Option(help="Processes featurizing and predicting a file.")] = 2,
) -> None:
    """Predict molecules with a trained model: SMILES as arguments (a table) or a whole file.

    Rows that cannot be featurized get empty predictions and the reason in the error column.

    Example: molpipe predict --model runs/esol CCO c1ccccc1
    Example: molpipe predict --model runs/esol --input mols.csv --output preds.csv
    """
    from molpipe.model import ModelError
    from molpipe.predict import Predictor, predict_file, predict_smiles

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    if smiles and input is not None:
        fail("give SMILES as arguments or --input FILE, not both")
    if not smiles and input is None:
        fail("give SMILES as arguments, or --input FILE (CSV or SDF)")
    if input is None and output is not None:
        fail("--output needs --input FILE; SMILES given as arguments are printed as a table")
    try:
        predictor = Predictor.load(model)
        if input is None:
            P, errors = predict_smiles(predictor, smiles)
        else:
            if not input.exists():
                fail(f"{input}: no such file; check the path")
            if output is None:
                stem = input.name.split(".")[0] or "input"
                output = str(input.with_name(f"{stem}_predictions.csv"))
            with _featurize_bar() as bar:
                task = bar.add_task("predicting", total=None, rate="")
                summary = predict_file(predictor, input, output, smiles_column=smiles_column,
                                       overwrite=overwrite, n_jobs=jobs,
                                       progress=_bar_callback(bar, task))
    except BrokenPipeError:                     # `--output - | head`: the reader left
        import os
        import sys
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())
        raise typer.Exit(1)
    except (DataError, ModelError, OSError) as err:
        fail(str(err))
    if input is None:
        table = Table(title=f"predictions of {model}", title_justify="left")
        table.add_column("SMILES", overflow="fold")
        for t in predictor.targets:
            table.add_column(t, justify="right")
        table.add_column("error", style="red", overflow="fold")
        for s, p, e in zip(smiles, P, errors):
            table.add_row(escape(s), *("" if e else f"{v:.4g}" for v in p), escape(e))
        console.print(table)
        failed = sum(bool(e) for e in errors)
        if failed:
            err_console.print(f"{failed} of {len(smiles)} molecules could not be predicted")
        return
    where = "standard output" if summary["output"] == "-" else summary["output"]
    err_console.print(
        f"[bold]{summary['rows']}[/bold] rows: {summary['predicted']} predicted, "
        f"{summary['failed']} failed · {summary['molecules_per_second']:,.0f} molecules/s · "
        f"{summary['seconds']:.1f} s → {escape(where)}", soft_wrap=True, highlight=False)
    for row, reason in summary["first_errors"]:
        err_console.print(f"  row {row}: {escape(reason)}", soft_wrap=True, highlight=False)
    if summary["failed"] > len(summary["first_errors"]):
        err_console.print("  … (the error column names every failed row's reason)")


@app.command()
def evaluate(
    data: Annotated[Optional[str], typer.Argument(
        help="Labelled CSV/SDF file, bundled data set name or graph store (default: the "
             "run's own test split).", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Run directory written by `molpipe train`.")] = None,
    smiles_column: Annotated[Optional[str], typer.Option(help="SMILES column of a CSV.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
) -> None:
    """Metrics of a trained model (RMSE, MAE, R² or AUC) on labelled data or its test split.

    Example: molpipe evaluate --model runs/esol             (the run's test split)
    Example: molpipe evaluate --model runs/esol datasets/esol.csv
    """
    import json

    from molpipe.display import metrics_rich_table
    from molpipe.evaluate import evaluate as run_evaluate
    from molpipe.model import ModelError

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    try:
        with _featurize_bar() as bar:
            task = bar.add_task("featurizing", total=None, rate="")
            result = run_evaluate(model, data, smiles_column=smiles_column,
                                  progress=_bar_callback(bar, task))
    except (DataError, ModelError, OSError) as err:
        fail(str(err))
    if json_out:
        print(json.dumps(result, indent=2, default=float))
        return
    what = (f"{result['data']}, test split" if result["split"] else result["data"])
    console.print(metrics_rich_table(f"{model} on {what}", result["metrics"]))
    note = (f", {result['rejected']} rows could not be featurized"
            if result["rejected"] else "")
    console.print(f"{result['rows']} molecules{note}", highlight=False)


@app.command()
def plot(
    run_dir: Annotated[Path, typer.Argument(help="Run directory written by `molpipe train`.")],
) -> None:
    """Charts of a run as PNGs in RUN_DIR/plots: learning curves, parity, pipeline timeline,
    worker utilization.

    Example: molpipe plot runs/esol
    """
    from molpipe.plots import plot_run

    if not run_dir.is_dir():
        fail(f"{run_dir}: no such directory; pass a run directory written by `molpipe train`")
    try:
        paths = plot_run(run_dir)
    except (OSError, ValueError, KeyError, TypeError) as err:   # includes bad JSON / CSV
        fail(f"{run_dir}: cannot plot ({err})")
    if not paths:
        fail(f"{run_dir}: nothing to plot (no metrics.csv, test_predictions.csv or trace.json)")
    for p in paths:
        console.print(str(p), highlight=False, soft_wrap=True)


if __name__ == "__main__":
    app()
