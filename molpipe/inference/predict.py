"""Predict with a trained model: SMILES, CSV or SDF in, predictions out, streamed in chunks.

A row that cannot be featurized gets empty predictions and its reason in the ``error``
column; every other row is predicted. Files are read, featurized, packed into instances of
``BATCH`` molecules (grouped by plan), predicted and written ``CHUNK`` rows at a time, so
memory stays bounded whatever the file's length; with ``n_jobs > 1`` chunks are featurized
and predicted in worker processes, in order.
"""

from __future__ import annotations

import csv
import dataclasses
import itertools
import multiprocessing as mp
import os
import secrets
import sys
import threading
import time
from collections import deque
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError
from molpipe.io.model import ModelError, load_domain, load_model

BATCH = 64          # molecules per instance
CHUNK = 1024        # rows featurized and predicted per task
#: progress callback: (rows done, estimated total rows)
Progress = Callable[[int, int], None]


class Predictor:
    """A loaded model that featurizes molecules as its training data was and predicts them.

    Fields
    ------
    network : the Network, its parameters loaded.
    config : the model's validated ``config.json``.
    targets : list[str] the model's targets, in the order of prediction columns.
    task : "regression" (predictions in data units) or "classification" (probabilities).
    domain : the training set's ``molpipe.chem.domain.Domain``, None for a model saved without it.
    """

    def __init__(self, network, config: dict, domain=None):
        from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION, V1_DIMS

        version = config.get("featurizer_version")
        where = config.get('_dir', 'model')
        # version 2 appended columns to version 1's: a version-1 model reads their prefix
        dims = {"1": V1_DIMS, str(FEATURIZER_VERSION): (ATOM_DIM, BOND_DIM)}
        if version is not None and str(version) not in dims:
            raise ModelError(f"{where}: trained on featurizer version {version}, this molpipe "
                             f"reads versions {', '.join(dims)}; retrain the model")
        expect = dims[str(version)] if version is not None else (ATOM_DIM, BOND_DIM)
        if (config["atom_dim"], config["bond_dim"]) != expect:
            raise ModelError(f"{where}: the model expects "
                             f"{config['atom_dim']} atom / {config['bond_dim']} bond features, "
                             f"the featurizer makes {expect[0]} / {expect[1]}; retrain the model")
        self.dims = expect
        self.network = network
        self.config = config
        self.targets = list(config["targets"])
        self.task = config["task"]
        self.min_rounds = config.get("min_rounds") or 2
        self.max_rounds = config.get("max_rounds") or 6
        self.domain = domain

    @classmethod
    def load(cls, run_dir: str | Path) -> "Predictor":
        """The model of a run directory (or a model directory); ModelError if it is not one."""
        run_dir = Path(run_dir)
        if not run_dir.exists():
            raise ModelError(f"{run_dir}: no such directory; pass a run directory written "
                             "by `molpipe train`")
        if not run_dir.is_dir():
            raise ModelError(f"{run_dir}: not a directory; pass a run directory written by "
                             "`molpipe train`")
        network, config = load_model(run_dir)
        return cls(network, config, load_domain(config))

    def featurize(self, item):
        """MolGraph of a SMILES or Mol (FeaturizationError with the reason if it fails)."""
        from molpipe.chem.featurize import FeaturizationError, featurize

        if isinstance(item, Exception):
            raise item
        if not isinstance(item, str) and not hasattr(item, "GetAtoms"):
            raise FeaturizationError(f"not a SMILES string ({type(item).__name__})")
        return featurize(item, min_rounds=self.min_rounds, max_rounds=self.max_rounds)

    def fit_features(self, inst):
        """``inst`` with the feature columns the model was trained on (a version-1 model
        reads the first columns of today's features)."""
        a, b = self.dims
        if inst.V.shape[1] == a and inst.E.shape[1] == b:
            return inst
        return dataclasses.replace(inst, V=np.ascontiguousarray(inst.V[:, :a]),
                                   E=np.ascontiguousarray(inst.E[:, :b]))

    def predict_graphs(self, graphs: Sequence, batch: int = BATCH) -> np.ndarray:
        """Predictions (n, n_targets) float64 of MolGraphs, packed ``batch`` per instance."""
        from molpipe.data.instance import group_by_plan, pack

        n_t = len(self.targets)
        P = np.full((len(graphs), n_t), np.nan)
        if not graphs:
            return P
        n_rounds = np.array([g.n_rounds for g in graphs])
        has_rings = np.array([g.has_rings for g in graphs])
        for rows in group_by_plan(n_rounds, has_rings, batch):
            inst = pack([graphs[i] for i in rows], np.full((len(rows), n_t), np.nan, np.float32))
            P[rows] = self.network.predict(self.fit_features(inst))
        return P

    def predict(self, items: Sequence, batch: int = BATCH) -> tuple[np.ndarray, list[str]]:
        """Predict SMILES / Mols (or FeaturizationErrors standing for broken rows).

        Returns
        -------
        P : (n, n_targets) float64, NaN on rows that failed.
        errors : list of n strings, "" where the row was predicted, else the reason.
        """
        P, errors, _ = self._predict(items, batch, with_mols=False)
        return P, errors

    def predict_with_domain(self, items: Sequence, batch: int = BATCH):
        """``predict`` and, for a model that keeps its domain, each row's nearest training
        similarity (NaN on failed rows) and why it lies outside the domain ("" inside).

        Returns
        -------
        P, errors : as ``predict``.
        domain : None for a model without a domain, else (similarity (n,), reasons list).
        """
        P, errors, mols = self._predict(items, batch, with_mols=self.domain is not None)
        if self.domain is None:
            return P, errors, None
        similarity, reasons = self.domain.check(mols)
        return P, errors, (similarity, reasons)

    def _predict(self, items: Sequence, batch: int, with_mols: bool):
        from molpipe.chem.featurize import parse_smiles

        graphs, kept, errors = [], [], [""] * len(items)
        mols = [None] * len(items)
        for i, item in enumerate(items):
            try:
                if with_mols and isinstance(item, str):
                    item = parse_smiles(item)
                graphs.append(self.featurize(item))
            except Exception as err:            # every row is predicted or gets its reason
                errors[i] = str(err) or type(err).__name__
                continue
            kept.append(i)
            if with_mols:
                mols[i] = item
        P = np.full((len(items), len(self.targets)), np.nan)
        P[kept] = self.predict_graphs(graphs, batch)
        for i in kept:                          # a non-finite prediction is a failure too
            if not np.isfinite(P[i]).all():
                errors[i] = "prediction is not finite"
                mols[i] = None
        return P, errors, mols


def predict_smiles(model: "str | Path | Predictor", smiles: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Predictions (n, n_targets) and per-row error reasons ("" if fine) for SMILES strings."""
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    from molpipe.kernels import one_blas_thread

    with one_blas_thread():
        return predictor.predict(list(smiles))


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

    from molpipe.data.readers import PEEK_ROWS, mol_from_block, sdf_records

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

_WORKER: Predictor | None = None


def _init_worker(predictor: Predictor) -> None:
    global _WORKER
    from molpipe.kernels import one_blas_thread

    _WORKER = predictor
    one_blas_thread()                  # for the worker process's lifetime


def _predict_chunk(items: list):
    return _WORKER.predict_with_domain(items)


def _map_chunks(predictor: Predictor, chunks: Iterator[list], n_jobs: int) -> Iterator:
    """(P, errors, domain) of every chunk of items (``Predictor.predict_with_domain``), in
    order; worker processes if there are several."""
    first = next(chunks, None)
    if first is None:
        return
    second = next(chunks, None)
    if n_jobs <= 1 or second is None:          # small input: no process start-up
        for c in itertools.chain([first], [second] if second is not None else [], chunks):
            yield predictor.predict_with_domain(c)
        return
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context(method),
                             initializer=_init_worker, initargs=(predictor,)) as pool:
        pending: deque = deque()
        try:
            for c in itertools.chain([first, second], chunks):
                pending.append(pool.submit(_predict_chunk, c))
                if len(pending) >= 2 * n_jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        except BrokenProcessPool as err:
            raise DataError(f"a prediction process died ({err}); retry with --jobs 1 to "
                            "find the row that kills it") from None
        finally:
            for f in pending:
                f.cancel()


def _chunked(rows: Iterator, size: int) -> Iterator[list]:
    while chunk := list(itertools.islice(rows, size)):
        yield chunk


DOMAIN_COLUMNS = ["similarity", "in_domain", "domain_note"]


def output_columns(columns: list[str], targets: list[str],
                   domain: bool = False) -> tuple[list[str], list[int]]:
    """Output header and the input columns kept (those not named like an output column);
    ``domain``: with the applicability-domain columns."""
    ours = [f"pred_{t}" for t in targets] + ["error"] + (DOMAIN_COLUMNS if domain else [])
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
                 chunk_size: int = CHUNK, progress: Progress | None = None) -> dict:
    """Predict every row of a CSV/SDF file into the CSV ``output`` ("-": standard output).

    The output holds the input columns, one ``pred_<target>`` column per target and
    ``error``, and for a model that keeps its training set's domain ``similarity`` (nearest
    training neighbour's Tanimoto similarity), ``in_domain`` (true / false) and
    ``domain_note`` (why not); it is written beside its final name and renamed into place when complete,
    so a failure leaves any existing file untouched.

    Returns
    -------
    dict : rows, predicted, failed, seconds, molecules_per_second, output, targets,
        first_errors (up to 5 (row, reason) pairs), out_of_domain (None without a domain)
        and first_out_of_domain (up to 5 (row, note) pairs).
    """
    from molpipe.kernels import one_blas_thread

    t0 = time.perf_counter()
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    check_output(output, overwrite)
    source = open_input(input, smiles_column)
    has_domain = predictor.domain is not None
    header, keep = output_columns(source.columns, predictor.targets, has_domain)
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
            for chunk in _chunked(source.rows, chunk_size):
                fields_queue.append([f for f, _ in chunk])
                yield [item for _, item in chunk]

        with one_blas_thread():
            for P, errors, domain in _map_chunks(predictor, items(), n_jobs):
                fields = fields_queue.popleft()
                for j, (f, p, e) in enumerate(zip(fields, P, errors)):
                    counts["rows"] += 1
                    if e:
                        counts["failed"] += 1
                        if len(first_errors) < 5:
                            first_errors.append((counts["rows"], e))
                    preds = [""] * len(p) if e else [repr(float(v)) for v in p]
                    row = [f[i] for i in keep] + preds + [e]
                    if has_domain:
                        note = "" if e else domain[1][j]
                        if note:
                            counts["out"] += 1
                            if len(first_out) < 5:
                                first_out.append((counts["rows"], note))
                        row += (["", "", ""] if e else
                                [f"{domain[0][j]:.3f}", "false" if note else "true", note])
                    writer.writerow(row)
                if progress:
                    progress(counts["rows"], max(source.n_rows_estimate, counts["rows"]))
        if not to_stdout:
            fh.close()
            os.replace(tmp, out)
        else:
            fh.flush()
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
            "first_out_of_domain": first_out}
