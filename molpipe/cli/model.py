"""molpipe predict, evaluate and plot: what a trained run directory is used for."""

from __future__ import annotations

import numbers
from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from molpipe.cli import bar_callback, console, err_console, fail, featurize_bar
from molpipe.cli.display import classification_table, regression_table
from molpipe.data.errors import DataError


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
    chunk_size: Annotated[Optional[int], typer.Option(
        help="Rows of a file featurized, predicted and written at a time (memory holds at "
             "most 2 x jobs + 1 chunks; default 1024).", show_default=False)] = None,
    domain: Annotated[bool, typer.Option(
        help="Check each molecule against the model's training domain (--no-domain: leave "
             "out the similarity, in_domain and domain_note columns, and their cost).")] = True,
    json_out: Annotated[bool, typer.Option(
        "--json", help="For a file: print the summary (rows, predicted, failed, molecules/s, "
                       "...) as JSON on standard output.")] = False,
) -> None:
    """Predict molecules with a trained model: SMILES as arguments (a table) or a whole file.

    Rows that cannot be featurized get empty predictions and the reason in the error column.

    Example: molpipe predict --model runs/esol CCO c1ccccc1
    Example: molpipe predict --model runs/esol --input mols.csv --output preds.csv
    """
    from molpipe.io.model import ModelError
    from molpipe.inference.files import predict_file
    from molpipe.inference.predict import CHUNK, Predictor

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    if smiles and input is not None:
        fail("give SMILES as arguments or --input FILE, not both")
    if not smiles and input is None:
        fail("give SMILES as arguments, or --input FILE (CSV or SDF)")
    if input is None and output is not None:
        fail("--output needs --input FILE; SMILES given as arguments are printed as a table")
    if json_out and (input is None or output == "-"):
        fail("--json prints a file's summary: give --input FILE and an --output file")
    if jobs < 1 or (chunk_size is not None and chunk_size < 1):
        fail(f"--jobs and --chunk-size must be at least 1, got {jobs} and {chunk_size}")
    try:
        predictor = Predictor.load(model)
        if input is None:
            from molpipe.kernels import one_blas_thread

            with one_blas_thread():
                P, S, errors, domain = predictor.predict_all(list(smiles), domain=domain)
        else:
            if not input.exists():
                fail(f"{input}: no such file; check the path")
            if output is None:
                stem = input.name.split(".")[0] or "input"
                output = str(input.with_name(f"{stem}_predictions.csv"))
            with featurize_bar() as bar:
                task = bar.add_task("predicting", total=None, rate="")
                summary = predict_file(predictor, input, output, smiles_column=smiles_column,
                                       overwrite=overwrite, n_jobs=jobs,
                                       chunk_size=chunk_size or CHUNK, domain=domain,
                                       progress=bar_callback(bar, task))
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
        if domain is not None:
            table.add_column("similarity", justify="right")
        table.add_column("error" if domain is None else "error / domain", style="red",
                         overflow="fold")
        for i, (s, p, e) in enumerate(zip(smiles, P, errors)):
            cells = ["" if e else f"{v:.4g}" for v in p]
            if S is not None and not e:           # an ensemble's or mve model's σ
                cells = [f"{c} ± {sd:.2g}" for c, sd in zip(cells, S[i])]
            note = e
            if domain is not None:
                cells.append("" if e else f"{domain[0][i]:.2f}")
                note = e or (f"outside the domain: {domain[1][i]}" if domain[1][i] else "")
            table.add_row(escape(s), *cells, escape(note))
        console.print(table)
        failed = sum(bool(e) for e in errors)
        if failed:
            err_console.print(f"{failed} of {len(smiles)} molecules could not be predicted")
        if domain is not None:
            outside = sum(bool(r) and not e for r, e in zip(domain[1], errors))
            if outside:
                err_console.print(_domain_warning(outside, len(smiles) - failed))
        return
    if json_out:
        import json

        print(json.dumps(summary))
    where = "standard output" if summary["output"] == "-" else summary["output"]
    err_console.print(
        f"[bold]{summary['rows']}[/bold] rows: {summary['predicted']} predicted, "
        f"{summary['failed']} failed · {summary['molecules_per_second']:,.0f} molecules/s · "
        f"{summary['seconds']:.1f} s → {escape(where)}", soft_wrap=True, highlight=False)
    for row, reason in summary["first_errors"]:
        err_console.print(f"  row {row}: {escape(reason)}", soft_wrap=True, highlight=False)
    if summary["failed"] > len(summary["first_errors"]):
        err_console.print("  … (the error column names every failed row's reason)")
    if summary["out_of_domain"]:
        err_console.print(_domain_warning(summary["out_of_domain"], summary["predicted"]),
                          soft_wrap=True, highlight=False)
        for row, note in summary["first_out_of_domain"]:
            err_console.print(f"  row {row}: {escape(note)}", soft_wrap=True, highlight=False)
        if summary["out_of_domain"] > len(summary["first_out_of_domain"]):
            err_console.print("  … (the in_domain and domain_note columns name every one)")


def _domain_warning(outside: int, predicted: int) -> str:
    from molpipe.chem.domain import SIMILAR

    return (f"[yellow]warning:[/yellow] {outside} of {predicted} predicted molecules lie "
            f"outside the model's training domain (nearest training molecule's Tanimoto "
            f"similarity < {SIMILAR}, an element or a size never seen in training): "
            "trust those predictions less")


def evaluate(
    data: Annotated[Optional[str], typer.Argument(
        help="Labelled CSV/SDF file, bundled data set name or graph store (default: the "
             "run's own test split).", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Run directory written by `molpipe train`.")] = None,
    smiles_column: Annotated[Optional[str], typer.Option(help="SMILES column of a CSV.")] = None,
    json_out: Annotated[bool, typer.Option(
        "--json", help="Print the results as JSON (per-target metrics and their mean; NaN as "
                       "null).")] = False,
    jobs: Annotated[int, typer.Option(help="Threads predicting the molecules.")] = 2,
) -> None:
    """Metrics of a trained model on labelled data or its test split: RMSE, MAE, R² per target
    (regression) or ROC-AUC, PR-AUC, accuracy per task (classification), and their mean.

    Example: molpipe evaluate --model runs/esol             (the run's test split)
    Example: molpipe evaluate --model runs/esol datasets/esol.csv
    """
    import json

    from molpipe.inference.evaluate import evaluate as run_evaluate
    from molpipe.io.model import ModelError

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    if jobs < 1:
        fail(f"--jobs must be at least 1, got {jobs}")
    try:
        with featurize_bar() as bar:
            task = bar.add_task("featurizing", total=None, rate="")
            result = run_evaluate(model, data, smiles_column=smiles_column,
                                  progress=bar_callback(bar, task), n_jobs=jobs)
    except (DataError, ModelError, OSError) as err:
        fail(str(err))
    if json_out:
        print(json.dumps(_nan_to_none(result), indent=2, default=float, allow_nan=False))
        return
    what = (f"{result['data']}, test split" if result["split"] else result["data"])
    title = f"{model} on {what}"
    if result["task"] == "classification":
        console.print(classification_table(title, result["metrics"], result["summary"]))
        left = result["summary"]["tasks_left_out"]
        if left:
            console.print(f"left out of the mean: {escape(', '.join(left))}", soft_wrap=True,
                          highlight=False)
    else:
        console.print(regression_table(title, result["metrics"], result["summary"]))
    if "calibration" in result:                  # a model with σ: an ensemble, --loss mve
        from molpipe.cli.display import calibration_rich_table

        console.print(calibration_rich_table("σ against the errors", result["calibration"]))
    note = (f", {result['rejected']} rows could not be featurized"
            if result["rejected"] else "")
    console.print(f"{result['rows']} molecules{note}", highlight=False)


def _nan_to_none(value):
    """``value`` with every NaN float (nested in dicts and lists) replaced by None."""
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, numbers.Real) and value != value:     # numpy floats too
        return None
    return value


def plot(
    run_dir: Annotated[Path, typer.Argument(
        help="Run directory written by `molpipe train`, or a service directory.")],
) -> None:
    """Charts of a run as PNGs in RUN_DIR/plots: learning curves, parity (regression) or ROC
    curves (classification), pipeline timeline, worker utilization; for a service's
    directory (molpipe serve, train --follow) the prequential error over rows observed.

    Example: molpipe plot runs/esol
    """
    from molpipe.measure.plots import plot_run

    if not run_dir.is_dir():
        fail(f"{run_dir}: no such directory; pass a run directory written by `molpipe train`")
    try:
        paths = plot_run(run_dir)
        if (run_dir / "prequential.csv").is_file():     # a service's directory
            from molpipe.serve.plots import plot_prequential

            paths.append(plot_prequential(run_dir))
    except (OSError, ValueError, KeyError, TypeError) as err:   # includes bad JSON / CSV
        fail(f"{run_dir}: cannot plot ({err})")
    if not paths:
        fail(f"{run_dir}: nothing to plot (no metrics.csv, test_predictions.csv, trace.json "
             "or prequential.csv)")
    for p in paths:
        console.print(str(p), highlight=False, soft_wrap=True)
