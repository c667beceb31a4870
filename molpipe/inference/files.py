"""Predict a CSV or SDF file, streamed in chunks, into a CSV.

A row that cannot be featurized gets empty predictions and its reason in the ``error``
column; every other row is predicted. Files are read, featurized, packed into instances of
``BATCH`` molecules (grouped by plan), predicted and written ``CHUNK`` rows at a time, so
memory stays bounded whatever the file's length; with ``n_jobs > 1`` chunks are featurized
and predicted in worker processes, in order.
"""

from __future__ import annotations

import csv
import itertools
import multiprocessing as mp
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

from molpipe.data.errors import DataError
from molpipe.inference.predict import CHUNK, Predictor

Progress = Callable[[int, int], None]


# -- input files --------------------------------------------------------------------------

@dataclass
class InputFile:
    """An opened CSV/SDF file for prediction: its columns and a stream of its rows.

    Fields
    ------
    path : the file.
    columns : list[str] input columns, copied to the output.
    n_rows_estimate : int cheap row count for progress bars.
    rows : iterator of (fields: list[str] aligned with ``columns``, SMILES | Mol | FeaturizationError).
    """

    path: Path
    columns: list[str]
    n_rows_estimate: int
    rows: Iterator


def open_input(path: str | Path, smiles_column: str | None = None) -> InputFile:
    """Open a CSV (every column kept) or SDF (name, SMILES, properties) file for prediction."""
    from molpipe.data.readers import open_table

    table = open_table(path, smiles_column=smiles_column, targets=())
    if table.kind == "csv":
        header = list(table.columns)
        rows = _csv_rows(table, header)
    else:
        header, rows = _sdf_rows(table)
    return InputFile(table.path, header, table.estimate_rows(), rows)


def _csv_rows(table, header: list[str]) -> Iterator:
    """(fields, SMILES or FeaturizationError) per data row, as ``readers`` numbers them."""
    from molpipe.data.readers import csv_rows

    width, s = len(header), header.index(table.smiles_column)
    for _, fields, problem in csv_rows(table):
        if problem is not None:
            yield (fields + [""] * width)[:width], problem
        else:
            yield fields, fields[s].strip()


def _sdf_rows(table) -> tuple[list[str], Iterator]:
    """Columns name, smiles, then the properties of the first records; a row per record."""
    from rdkit import Chem

    from molpipe.data.sdf import mol_from_block, sdf_records
    from molpipe.data.text import PEEK_ROWS

    peek = itertools.islice(sdf_records(table.path), PEEK_ROWS)
    props = list(dict.fromkeys(k for _, p in peek for k in p if k not in ("name", "smiles")))
    columns = ["name", "smiles", *props]

    def rows():
        for block, p in sdf_records(table.path):
            item = mol_from_block(block)
            smiles = Chem.MolToSmiles(item) if isinstance(item, Chem.Mol) else ""
            name = block.split("\n", 1)[0].strip()
            yield [name, smiles, *(p.get(k, "") for k in props)], item

    return columns, rows()


# -- streaming prediction -----------------------------------------------------------------

_WORKER: tuple | None = None


def _init_worker(fn, args: tuple) -> None:
    global _WORKER
    from molpipe.kernels import one_blas_thread
    from molpipe.runtime.memory import keep_freed_memory

    _WORKER = (fn, args)
    one_blas_thread()                  # for the worker process's lifetime
    keep_freed_memory()                # (a spawned worker: a forked one inherits it)


def _run_chunk(items: list):
    fn, args = _WORKER
    return fn(*args, items)


def _predict_all(predictor: Predictor, domain: bool, items: list):
    return predictor.predict_all(items, domain=domain)


def map_chunks(fn, args: tuple, chunks: Iterator[list], n_jobs: int,
               what: str = "prediction") -> Iterator:
    """``fn(*args, chunk)`` of every chunk, in order: in this process for one job or one
    chunk, else on ``n_jobs`` worker processes (``fn`` module-level, ``args`` sent once to
    each; at most ``2 n_jobs`` chunks in flight)."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    rest = itertools.chain([first], [] if second is None else [second], chunks)
    if n_jobs <= 1 or second is None:          # small input: no process start-up
        for c in rest:
            yield fn(*args, c)
        return
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context(method),
                             initializer=_init_worker, initargs=(fn, args)) as pool:
        try:
            yield from in_order(pool, _run_chunk, rest, 2 * n_jobs)
        except BrokenProcessPool as err:
            raise DataError(f"a {what} process died ({err}); retry with --jobs 1 to "
                            "find the row that kills it") from None


def in_order(pool, fn, items, depth: int):
    """``fn(item)`` of every item, run on ``pool`` (an Executor) and yielded in order, at
    most ``depth`` submitted ahead; what is still pending when this stops is cancelled."""
    pending: deque = deque()
    try:
        for item in items:
            pending.append(pool.submit(fn, item))
            if len(pending) >= depth:
                yield pending.popleft().result()
        while pending:
            yield pending.popleft().result()
    finally:
        for f in pending:
            f.cancel()


def _chunked(rows: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


class Flight:
    """Rows read from an input and not yet written out; ``peak``: the most at once (what
    bounds memory: at most ``2 n_jobs + 1`` chunks, whatever the file's length)."""

    def __init__(self):
        self.read = self.written = self.peak = 0

    def reading(self, rows: Iterator) -> Iterator:
        """``rows``, counted as they are read."""
        for row in rows:
            self.read += 1
            if self.read - self.written > self.peak:
                self.peak = self.read - self.written
            yield row

    def wrote(self, n: int) -> None:
        self.written += n


DOMAIN_COLUMNS = ["similarity", "in_domain", "domain_note"]


def output_columns(columns: list[str], targets: list[str], domain: bool = False,
                   std: bool = False) -> tuple[list[str], list[int]]:
    """Output header and the input columns kept (those not named like an output column);
    ``domain``: with the applicability-domain columns; ``std``: a ``<target>_std`` column
    after each target's prediction columns."""
    ours = ([f"pred_{t}" for t in targets] + ([f"{t}_std" for t in targets] if std else [])
            + ["error"] + (DOMAIN_COLUMNS if domain else []))
    keep = [i for i, c in enumerate(columns) if c not in ours]
    return [columns[i] for i in keep] + ours, keep


def check_output(output: str | Path, overwrite: bool) -> None:
    """DataError if ``output`` cannot be written (exists without ``overwrite``, no directory)."""
    if str(output) == "-":
        return
    out = Path(output)
    if out.is_dir():
        raise DataError(f"{out}: is a directory; give a CSV file name for --output")
    if out.exists() and not overwrite:
        raise DataError(f"{out}: exists; pass --overwrite to replace it (or another --output)")
    if not out.parent.is_dir():
        raise DataError(f"{out.parent}: no such directory for --output")


def predict_file(model: "str | Path | Predictor", input: str | Path, output: str | Path, *,
                 smiles_column: str | None = None, overwrite: bool = False, n_jobs: int = 2,
                 chunk_size: int = CHUNK, domain: bool = True,
                 progress: Progress | None = None) -> dict:
    """Predict every row of a CSV/SDF file into the CSV ``output`` ("-": standard output).

    The output holds the input columns, one ``pred_<target>`` column per target (and
    ``<target>_std`` for a model with uncertainty: an ensemble, ``--loss mve``) and
    ``error``, and for a model that keeps its training set's domain ``similarity`` (nearest
    training neighbour's Tanimoto similarity), ``in_domain`` (true / false) and
    ``domain_note`` (why not), unless ``domain=False``; it is written beside its final name
    (flushed chunk by chunk, in input order) and renamed into place when complete, so a
    failure leaves any existing file untouched. ``chunk_size`` rows are featurized and
    predicted at a time, on ``n_jobs`` processes: at most ``(2 n_jobs + 1) chunk_size`` rows
    are in memory at once.

    Returns
    -------
    dict : rows, predicted, failed, seconds, molecules_per_second, output, targets,
        first_errors (up to 5 (row, reason) pairs), out_of_domain (None without a domain)
        and first_out_of_domain (up to 5 (row, note) pairs), max_rows_in_flight (rows read
        and not yet written, at most).
    """
    from molpipe.kernels import one_blas_thread

    if chunk_size < 1:
        raise DataError(f"the chunk size must be at least 1, got {chunk_size}")
    t0 = time.perf_counter()
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    check_output(output, overwrite)
    source = open_input(input, smiles_column)
    flight = Flight()
    rows = flight.reading(source.rows)
    has_domain = domain and predictor.domain is not None
    has_std = predictor.has_std
    header, keep = output_columns(source.columns, predictor.targets, has_domain, has_std)
    to_stdout = str(output) == "-"
    out = None if to_stdout else Path(output)
    tmp = None if to_stdout else out.with_name(f".{out.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    counts = {"rows": 0, "failed": 0, "out": 0}
    first_errors: list = []
    first_out: list = []
    fh = sys.stdout if to_stdout else open(tmp, "w", newline="", encoding="utf-8")
    try:
        writer = csv.writer(fh, lineterminator="\n")
        writer.writerow(header)
        fields_queue: deque = deque()

        def items():
            for chunk in _chunked(rows, chunk_size):
                fields_queue.append([f for f, _ in chunk])
                yield [item for _, item in chunk]

        with one_blas_thread():
            for P, S, errors, dom in map_chunks(_predict_all, (predictor, has_domain), items(),
                                                n_jobs):
                fields = fields_queue.popleft()
                first = counts["rows"] + 1
                for j, e in enumerate(errors):
                    if e:
                        counts["failed"] += 1
                        if len(first_errors) < 5:
                            first_errors.append((first + j, e))
                    elif has_domain and dom[1][j]:
                        counts["out"] += 1
                        if len(first_out) < 5:
                            first_out.append((first + j, dom[1][j]))
                writer.writerows(_output_rows(fields, keep, P, S, errors, dom))
                fh.flush()
                counts["rows"] += len(errors)
                flight.wrote(len(errors))
                if progress:
                    progress(counts["rows"], max(source.n_rows_estimate, counts["rows"]))
        if not to_stdout:
            fh.close()
            os.replace(tmp, out)
    except BaseException:
        if not to_stdout:
            fh.close()
            tmp.unlink(missing_ok=True)
        raise
    seconds = time.perf_counter() - t0
    return {"rows": counts["rows"], "predicted": counts["rows"] - counts["failed"],
            "failed": counts["failed"], "seconds": seconds,
            "molecules_per_second": counts["rows"] / max(seconds, 1e-9),
            "output": "-" if to_stdout else str(out), "targets": predictor.targets,
            "first_errors": first_errors,
            "out_of_domain": counts["out"] if has_domain else None,
            "first_out_of_domain": first_out, "max_rows_in_flight": flight.peak}


def _output_rows(fields: list, keep: list[int], P, S, errors: list[str], domain) -> Iterator:
    """The output rows of one predicted chunk (as ``predict_file`` describes them)."""
    n_t = P.shape[1]
    blank = [""] * n_t
    P = P.tolist()
    S = S.tolist() if S is not None else None
    if domain is not None:
        sim, notes = domain[0].tolist(), domain[1]
    for j, (f, e) in enumerate(zip(fields, errors)):
        row = [f[i] for i in keep]
        if e:
            row += blank + (blank if S is not None else []) + [e]
            if domain is not None:
                row += ["", "", ""]
        else:
            row += [repr(v) for v in P[j]]
            if S is not None:
                row += [repr(v) for v in S[j]]
            row.append("")
            if domain is not None:
                note = notes[j]
                row += [f"{sim[j]:.3f}", "false" if note else "true", note]
        yield row
