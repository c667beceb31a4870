"""Learned fingerprints: the molecule vectors a trained model's readout computes, for many
molecules, streamed from a CSV / SDF / SMILES file into a ``.npy`` or ``.csv`` file.

The vector is the readout's pooled one (``layer="pooled"``): the atoms' gated sum
``S[m] = Σ_{a ∈ m} α[a] σ(H W_g + X U_g + b_g)[a] ⊙ tanh(H W_j + X U_j + b_j)[a]`` through the
aggregation's scales, ``h[m] = [C[m, k] S[m]]_k`` (``molpipe.nn.readout``): what the readout's
MLP reads, K d_h wide (K = 2 for ``mean+norm``). ``layer="hidden"`` gives the MLP's hidden
layer ``relu(h W_1 + b_1)`` instead (d_ffn wide).

Memory stays flat whatever the file's length: ``CHUNK`` rows are read, featurized, packed and
their vectors written (and flushed) at a time, in input order (in worker processes with
``n_jobs > 1``, at most ``2 n_jobs`` chunks in flight); a ``.npy`` is written with a header
for an unknown row count that is rewritten in place at the end.
"""

from __future__ import annotations

import itertools
import time
from collections import deque
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError
from molpipe.inference.files import Flight, Progress, check_output, map_chunks
from molpipe.inference.fpfiles import (CsvSink, NpySink, OutputFiles, errors_path,
                                        open_molecules)
from molpipe.inference.predict import BATCH, CHUNK, Predictor

LAYERS = ("pooled", "hidden")
OUTPUT_SUFFIXES = (".npy", ".csv")


def readout_input(network, inst) -> dict:
    """What the readout stage receives for ``inst`` (``{"H": (n_atoms, d_h)}``): the network's
    path forwarded up to the readout (inference, nothing cached)."""
    x: dict = {}
    for name, step in network.path(inst):
        if name == "readout":
            return x
        x = network.stages[name].forward(None, step, x, inst, False)
    raise ValueError("the network has no readout stage")


def width(predictor: Predictor, layer: str = "pooled") -> int:
    """How many numbers a molecule's vector of ``layer`` has."""
    W_1 = predictor.network.stages["readout"].params["W_1"]
    return W_1.shape[_layer_index(layer)]


def _layer_index(layer: str) -> int:
    if layer not in LAYERS:
        raise ValueError(f"layer must be one of {', '.join(LAYERS)}, got {layer!r}")
    return LAYERS.index(layer)


def graph_vectors(predictor: Predictor, graphs: Sequence, layer: str = "pooled",
                  batch: int = BATCH) -> np.ndarray:
    """Vectors (n, width) float32 of MolGraphs, packed ``batch`` per instance."""
    from molpipe.data.instance import pack_by_plan

    k = _layer_index(layer)
    F = np.full((len(graphs), width(predictor, layer)), np.nan, np.float32)
    if not graphs:
        return F
    readout = predictor.network.stages["readout"]
    Y = np.full((len(graphs), len(predictor.targets)), np.nan)
    for inst, rows in pack_by_plan(list(graphs), Y, batch):
        inst = predictor.fit_features(inst)
        F[rows] = readout.vectors(readout_input(predictor.network, inst), inst)[k]
    return F


def fingerprint(predictor: Predictor, items: Sequence, layer: str = "pooled",
                batch: int = BATCH) -> tuple[np.ndarray, list[str]]:
    """Vectors of SMILES / Mols (or FeaturizationErrors standing for broken rows).

    Returns
    -------
    F : (n, width) float32, a row of NaN where the molecule failed.
    errors : list of n strings, "" where the row has its vector, else the reason.
    """
    graphs, kept, errors = [], [], [""] * len(items)
    for i, item in enumerate(items):
        try:
            graphs.append(predictor.featurize(item))
        except Exception as err:            # every row gets its vector or its reason
            errors[i] = str(err) or type(err).__name__
            continue
        kept.append(i)
    F = np.full((len(items), width(predictor, layer)), np.nan, np.float32)
    F[kept] = graph_vectors(predictor, graphs, layer, batch)
    for i in kept:
        if not np.isfinite(F[i]).all():
            errors[i] = "fingerprint is not finite"
            F[i] = np.nan
    return F, errors


# -- streaming ------------------------------------------------------------------------------

def _vectors(predictor: Predictor, layer: str, items: list):
    return fingerprint(predictor, items, layer)


def fingerprint_file(model: "str | Path | Predictor", input: str | Path, output: str | Path, *,
                     layer: str = "pooled", smiles_column: str | None = None,
                     overwrite: bool = False, n_jobs: int = 2, chunk_size: int = CHUNK,
                     progress: Progress | None = None) -> dict:
    """Write the vector of every row of a CSV / SDF / SMILES file to ``output``.

    ``.npy``: a float32 (rows, width) array, one row per input row in order, NaN where the
    row failed; the failed rows (row number from 1, the input columns, the reason) go to
    ``<stem>.errors.csv`` beside it. ``.csv``: the input columns, ``fp_0`` ... ``fp_<width-1>``
    and ``error`` (empty vector cells and the reason on a failed row). Both are written
    beside their final names and renamed into place when complete.

    Returns
    -------
    dict : rows, done, failed, width, layer, seconds, molecules_per_second, output,
        errors_output (None for CSV), first_errors (up to 5 (row, reason) pairs),
        max_rows_in_flight (rows read and not yet written, at most: ``2 n_jobs + 1`` chunks).
    """
    from molpipe.kernels import one_blas_thread

    t0 = time.perf_counter()
    _layer_index(layer)
    out = Path(output)
    kind = out.suffix.lower()
    if kind not in OUTPUT_SUFFIXES:
        raise DataError(f"{out}: --output must end in .npy or .csv, got {kind or 'no suffix'!r}")
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    if getattr(predictor, "members", None):    # K members learned K different vector spaces
        raise DataError(f"{predictor.run_dir}: an ensemble; its members' vectors do not share "
                        f"one space: fingerprint one member (--model "
                        f"{predictor.run_dir / 'member-0'})")
    check_output(out, overwrite)
    errors_out = errors_path(out) if kind == ".npy" else None
    if errors_out is not None:
        check_output(errors_out, overwrite)
    source = open_molecules(input, smiles_column)
    flight = Flight()
    rows = flight.reading(source.rows)
    d = width(predictor, layer)
    counts = {"rows": 0, "failed": 0}
    first_errors: list = []
    files = OutputFiles()
    try:
        sink = (NpySink(files, out, errors_out, source.columns, d) if kind == ".npy"
                else CsvSink(files, out, source.columns, d))
        fields_queue: deque = deque()

        def items():
            while chunk := list(itertools.islice(rows, chunk_size)):
                fields_queue.append([f for f, _ in chunk])
                yield [item for _, item in chunk]

        with one_blas_thread():
            for F, errors in map_chunks(_vectors, (predictor, layer), items(), n_jobs,
                                        "fingerprint"):
                sink.write(counts["rows"] + 1, fields_queue.popleft(), F, errors)
                files.flush()
                flight.wrote(len(errors))
                for k, e in enumerate(errors):
                    if e:
                        counts["failed"] += 1
                        if len(first_errors) < 5:
                            first_errors.append((counts["rows"] + k + 1, e))
                counts["rows"] += len(errors)
                if progress:
                    progress(counts["rows"], max(source.n_rows_estimate, counts["rows"]))
        sink.close()
        files.commit()
    except BaseException:
        files.abort()
        raise
    seconds = time.perf_counter() - t0
    return {"rows": counts["rows"], "done": counts["rows"] - counts["failed"],
            "failed": counts["failed"], "width": d, "layer": layer, "seconds": seconds,
            "molecules_per_second": counts["rows"] / max(seconds, 1e-9), "output": str(out),
            "errors_output": None if errors_out is None else str(errors_out),
            "first_errors": first_errors, "max_rows_in_flight": flight.peak}
