"""molpipe fingerprint and explain: a trained model's molecule vectors and per-atom
contributions."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from molpipe.cli import bar_callback, console, err_console, fail, featurize_bar
from molpipe.data.errors import DataError


def fingerprint(
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Run directory written by `molpipe train`.")] = None,
    input: Annotated[Optional[Path], typer.Option(
        "--input", "-i", help="CSV (with a SMILES column), SDF or SMILES (.smi) file; "
                              "gzip-compressed too.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help=".npy (float32 rows x width; failed rows NaN, listed in "
                               "<stem>.errors.csv) or .csv (input columns, fp_0.., error).")] = None,
    layer: Annotated[str, typer.Option(
        help="pooled: the readout's molecule vector the MLP reads; hidden: the MLP's hidden "
             "layer.")] = "pooled",
    smiles_column: Annotated[Optional[str], typer.Option(
        help="CSV column holding SMILES (default: the column named 'smiles').")] = None,
    overwrite: Annotated[bool, typer.Option(help="Replace an existing --output file.")] = False,
    jobs: Annotated[int, typer.Option(help="Processes featurizing the file.")] = 2,
) -> None:
    """Learned fingerprints: a trained model's vector of every molecule of a file.

    The pooled vector (default) is what the readout's MLP reads: the atoms' gated states
    summed over each molecule, Σ_a σ(H W_g + X U_g + b_g) ⊙ tanh(H W_j + X U_j + b_j), through
    the aggregation's scales (mean+norm: the sum / n_atoms and the sum / 100 side by side,
    2 x hidden numbers). --layer hidden gives relu(h W_1 + b_1), the MLP's hidden layer.
    The file is streamed in chunks: memory stays flat whatever its length. Rows that cannot
    be featurized get NaN (.npy) or empty cells (.csv) and their reason.

    Example: molpipe fingerprint --model runs/esol -i mols.csv -o fp.npy
    """
    from molpipe.inference.fingerprint import LAYERS, fingerprint_file
    from molpipe.inference.predict import Predictor
    from molpipe.io.model import ModelError

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    if input is None:
        fail("give the molecules: --input FILE (CSV, SDF or .smi)")
    if output is None:
        fail("give the output: --output FILE.npy or FILE.csv")
    if layer not in LAYERS:
        fail(f"--layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    if jobs < 1:
        fail(f"--jobs must be at least 1, got {jobs}")
    try:
        predictor = Predictor.load(model)
        with featurize_bar() as bar:
            task = bar.add_task("fingerprinting", total=None, rate="")
            summary = fingerprint_file(predictor, input, output, layer=layer,
                                       smiles_column=smiles_column, overwrite=overwrite,
                                       n_jobs=jobs, progress=bar_callback(bar, task))
    except (DataError, ModelError, OSError) as err:
        fail(str(err))
    err_console.print(
        f"[bold]{summary['rows']}[/bold] rows: {summary['done']} fingerprinted "
        f"({summary['width']} numbers, {summary['layer']}), {summary['failed']} failed · "
        f"{summary['molecules_per_second']:,.0f} molecules/s · {summary['seconds']:.1f} s → "
        f"{escape(summary['output'])}", soft_wrap=True, highlight=False)
    for row, reason in summary["first_errors"]:
        err_console.print(f"  row {row}: {escape(reason)}", soft_wrap=True, highlight=False)
    if summary["failed"]:
        where = summary["errors_output"] or "the error column"
        err_console.print(f"  every failed row and its reason: {escape(where)}",
                          soft_wrap=True, highlight=False)


def explain() -> None:
    """placeholder"""
