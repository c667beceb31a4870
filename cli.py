"""molpipe command line: the typer app, assembled from the commands in ``molpipe.cli``.

preprocess and datasets (``molpipe.cli.data``), train (``molpipe.cli.train``), bench, simulate
and compare (``molpipe.cli.measure``), predict, evaluate and plot (``molpipe.cli.model``),
serve (``molpipe.cli.serve``), hpopt (``molpipe.cli.search``), fingerprint and
explain (``molpipe.cli.toolkit``).
"""

from __future__ import annotations

from typing import Annotated

import typer

from molpipe.cli import console
from molpipe.cli.data import datasets, preprocess
from molpipe.cli.measure import bench, compare, simulate
from molpipe.cli.model import evaluate, plot, predict
from molpipe.cli.search import hpopt
from molpipe.cli.serve import serve
from molpipe.cli.toolkit import explain, fingerprint
from molpipe.cli.train import train

app = typer.Typer(no_args_is_help=True, pretty_exceptions_enable=False,
                  help="Graph neural networks on molecules, trained with asynchronous "
                       "model-parallel pipelining.")


def _version(value: bool) -> None:
    if value:
        import platform

        import numba
        import numpy
        import rdkit

        import molpipe

        console.print(f"molpipe {molpipe.__version__} (Python {platform.python_version()}, "
                      f"RDKit {rdkit.__version__}, numpy {numpy.__version__}, "
                      f"numba {numba.__version__})", soft_wrap=True)
        raise typer.Exit()


@app.callback()
def main(version: Annotated[bool, typer.Option(
        "--version", callback=_version, is_eager=True,
        help="Print molpipe's version (and RDKit's, numpy's, numba's) and exit.")] = False) -> None:
    """Graph neural networks on molecules, trained with asynchronous model-parallel pipelining."""
    from molpipe.runtime.memory import keep_freed_memory

    keep_freed_memory()        # start-up: kernel outputs reuse freed memory (glibc)


for command in (preprocess, datasets, train, hpopt, bench, simulate, compare, predict, evaluate,
                plot, serve, fingerprint, explain):
    app.command()(command)


if __name__ == "__main__":
    app()
