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

    The pooled vector (default) is what the readout's MLP reads: the atoms'
    gated states σ(H W_g + X U_g + b_g) ⊙ tanh(H W_j + X U_j + b_j) summed over
    each molecule, through the aggregation's scales (mean+norm: the sum over
    n_atoms and the sum over 100 side by side, 2 x hidden numbers).
    --layer hidden gives the MLP's hidden layer relu(h W_1 + b_1) instead.

    The file is streamed in chunks (flat memory whatever its length). Rows that
    cannot be featurized get NaN (.npy) or empty cells (.csv) and their reason.

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



def explain(
    smiles: Annotated[list[str], typer.Argument(help="SMILES to explain.", show_default=False)],
    model: Annotated[Optional[Path], typer.Option(
        "--model", "-m", help="Run directory written by `molpipe train`.")] = None,
    output: Annotated[Optional[Path], typer.Option(
        "--output", "-o", help="Directory for the maps and CSVs (created).")] = None,
    method: Annotated[str, typer.Option(
        help="gradient: gradient x input on the atoms' states entering the readout; pooled: "
             "the exact split of the readout's pooled vector within the MLP's linear "
             "region.")] = "gradient",
) -> None:
    """Each atom's contribution to each target's prediction, drawn on the molecule.

    In DIR: <index>_<target>.png and .svg (RDKit similarity maps: red atoms
    raise the prediction, blue lower it; index: the SMILES' position from 0),
    contributions.csv (molecule, smiles, atom, element, target, contribution),
    molecules.csv (the explained value and the reference the contributions
    add up from) and errors.csv.

    Regression explains the prediction in data units, classification its
    logit. An additive baseline's per-atom terms are exact; the network's part
    is not additive over atoms in any readout (its gates and MLP are not
    linear), so it is split by --method.

    A SMILES that cannot be read gets its error (printed and in errors.csv),
    the others are drawn: exit code 0 if at least one was drawn, else 1.

    Example: molpipe explain --model runs/esol CCO c1ccccc1O -o explained
    """
    from molpipe.inference.drawing import write_explanations
    from molpipe.inference.explain import METHODS, explain as run_explain
    from molpipe.inference.predict import Predictor
    from molpipe.io.model import ModelError

    if model is None:
        fail("give the trained model: --model RUN_DIR (a directory written by `molpipe train`)")
    if output is None:
        fail("give the output directory: --output DIR")
    if output.exists() and not output.is_dir():
        fail(f"{output}: exists and is not a directory; give a directory for --output")
    if method not in METHODS:
        fail(f"--method must be one of {', '.join(METHODS)}, got {method!r}")
    try:
        from molpipe.kernels import one_blas_thread

        predictor = Predictor.load(model)
        with one_blas_thread():
            results = run_explain(predictor, smiles, method)
        summary = write_explanations(results, smiles, output)
    except (DataError, ModelError, OSError) as err:
        fail(str(err))
    for i, s, reason in summary["errors"]:
        err_console.print(f"[red]error:[/red] molecule {i} ({escape(s)}): {escape(reason)}",
                          soft_wrap=True, highlight=False)
    for i, r in enumerate(results):
        if isinstance(r, str):
            continue
        values = ", ".join(f"{t} {v:.4g} (reference {ref:.4g})"
                           for t, v, ref in zip(r.targets, r.value, r.reference))
        console.print(f"{i} {escape(r.smiles)}: {escape(values)}", soft_wrap=True,
                      highlight=False)
    console.print(f"{summary['drawn']} of {len(smiles)} molecules drawn → {escape(str(output))}",
                  soft_wrap=True, highlight=False)
    if not summary["drawn"]:
        raise typer.Exit(1)
