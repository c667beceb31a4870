"""build_store: featurize a CSV/SDF file once into a graph store directory (streamed, atomic)."""

from __future__ import annotations

import csv
import json
import multiprocessing as mp
import os
import secrets
import shutil
import sys
import threading
import time
from collections import deque
from concurrent.futures import ProcessPoolExecutor
from collections.abc import Callable, Iterable, Iterator, Sequence
from pathlib import Path

import numpy as np
from rdkit import Chem

from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION, featurize
from molpipe.data.errors import DataError
from molpipe.data.npyfile import NpyAppender
from molpipe.data.readers import open_table
from molpipe.data.text import NotNumbers, Row
from molpipe.io.safenpz import sha256_file

CHUNK = 256                     # rows per multiprocessing task
META = "meta.json"
REJECTS = "rejects.csv"
#: target cells that were not numbers (row, target, value), read as missing; their rows kept
REJECTED_CELLS = "rejected_cells.csv"
# per-atom, per-edge and per-ring arrays: name -> (dtype, tail shape)
_GRAPH_ARRAYS = {
    "V": (np.float32, (ATOM_DIM,)), "fragment": (np.int32, ()),
    "E": (np.float32, (BOND_DIM,)), "edges": (np.int32, (2,)), "edge_type": (np.int32, ()),
    "ring_atoms": (np.int32, ()), "ring_sizes": (np.int32, ()), "ring_system": (np.int32, ()),
}
#: progress callback: (rows done, estimated total rows)
Progress = Callable[[int, int], None]


def _featurize_chunk(rows: list[Row], min_rounds: int, max_rounds: int) -> dict:
    """Featurize a chunk of rows into concatenated arrays, plus its rejects."""
    graphs, kept_rows, smiles, ys, rejects = [], [], [], [], []
    for row, item, y in rows:
        text = item if isinstance(item, str) else ""
        try:
            if isinstance(item, Exception):
                raise item
            if isinstance(item, Chem.Mol):
                text = Chem.MolToSmiles(item)
            g = featurize(item, min_rounds=min_rounds, max_rounds=max_rounds)
        except Exception as err:            # every row is kept or rejected with its reason
            rejects.append((row, text, str(err) or type(err).__name__))
            continue
        graphs.append(g)
        kept_rows.append(row)
        smiles.append(text)
        ys.append(y)
    n_targets = rows[0][2].shape[0] if rows else 0
    out = {
        "rows": np.array(kept_rows, np.int64), "smiles": smiles, "rejects": rejects,
        "targets": np.array(ys, np.float32).reshape(len(graphs), n_targets),
        "n_rounds": np.array([g.n_rounds for g in graphs], np.int32),
        "has_rings": np.array([g.has_rings for g in graphs], bool),
        "n_atoms": np.array([g.n_atoms for g in graphs], np.int64),
        "n_edges": np.array([g.n_edges for g in graphs], np.int64),
        "n_rings": np.array([g.n_rings for g in graphs], np.int64),
    }
    parts = {
        "V": [g.V for g in graphs], "fragment": [g.fragment for g in graphs],
        "E": [g.E for g in graphs], "edges": [g.edge_index.T for g in graphs],
        "edge_type": [g.edge_type for g in graphs], "ring_atoms": [g.ring_atoms for g in graphs],
        "ring_sizes": [np.diff(g.ring_offsets) for g in graphs],
        "ring_system": [g.ring_system for g in graphs],
    }
    for name, (dtype, tail) in _GRAPH_ARRAYS.items():
        out[name] = (np.concatenate(parts[name]).astype(dtype, copy=False) if parts[name]
                     else np.zeros((0, *tail), dtype))
    return out


def _chunks(rows: Iterable[Row], size: int) -> Iterator[list[Row]]:
    chunk = []
    for r in rows:
        chunk.append(r)
        if len(chunk) == size:
            yield chunk
            chunk = []
    if chunk:
        yield chunk


def _map_chunks(chunks: Iterator[list[Row]], n_jobs: int, args: tuple) -> Iterator[dict]:
    """Featurize chunks on ``n_jobs`` processes, in order, with a bounded queue."""
    if n_jobs <= 1:
        for c in chunks:
            yield _featurize_chunk(c, *args)
        return
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    with ProcessPoolExecutor(n_jobs, mp_context=mp.get_context(method)) as pool:
        pending: deque = deque()
        try:
            for c in chunks:
                pending.append(pool.submit(_featurize_chunk, c, *args))
                if len(pending) >= 3 * n_jobs:
                    yield pending.popleft().result()
            while pending:
                yield pending.popleft().result()
        finally:
            for f in pending:
                f.cancel()


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir / META).exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: exists and is not a graph store; choose another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _install(tmp: Path, out_dir: Path) -> None:
    """Atomically move the finished store ``tmp`` to ``out_dir`` (replacing an old store)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def build_store(source: str | Path, out_dir: str | Path, *, smiles_column: str | None = None,
                targets: Sequence[str] | None = None, min_rounds: int = 2, max_rounds: int = 6,
                n_jobs: int = 2, progress: Progress | None = None,
                chunk_size: int = CHUNK) -> dict:
    """Featurize a CSV/SDF file once into the graph store directory ``out_dir``.

    Every row read is either kept or written to ``rejects.csv`` (row, smiles, reason).
    The store is written into a temporary directory and renamed into place.

    Returns
    -------
    dict : rows_read, rows_kept, rows_rejected, targets_missing (kept rows with a NaN
        target, per target), targets_not_numbers ({target: {count, rows, values}} of the cells
        read as NaN that were neither empty, an NA marker nor a number, among all rows read,
        with the first 5 rows and values; only targets that have any, else {}), rejects
        (path), store (path), seconds, mols_per_s, targets. ``meta.json`` holds the counts too.
    """
    if not 1 <= min_rounds <= max_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds} and {max_rounds}")
    t0 = time.perf_counter()
    table = open_table(source, smiles_column=smiles_column, targets=targets)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    total = table.estimate_rows() if progress else 0
    tmp = out_dir.with_name(f".{out_dir.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")
    tmp.mkdir()
    try:
        counts = _write_arrays(table, tmp, (min_rounds, max_rounds), n_jobs, chunk_size,
                               progress, total)
        if counts["rows_read"] == 0:
            raise DataError(f"{table.path}: no data rows; the file has only a header")
        seconds = time.perf_counter() - t0
        meta = {
            "featurizer_version": FEATURIZER_VERSION,
            "source": {"path": str(table.path.resolve()), "sha256": sha256_file(table.path),
                       "kind": table.kind},
            "smiles_column": table.smiles_column, "targets": list(table.target_names),
            **counts, "min_rounds": min_rounds, "max_rounds": max_rounds,
            "atom_dim": ATOM_DIM, "bond_dim": BOND_DIM, "seconds": round(seconds, 3),
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        _install(tmp, out_dir)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        raise
    return {"store": str(out_dir), "rejects": str(out_dir / REJECTS), **counts,
            "targets": list(table.target_names), "seconds": seconds,
            "mols_per_s": counts["rows_read"] / max(seconds, 1e-9)}


def _write_arrays(table, tmp: Path, rounds: tuple[int, int], n_jobs: int, chunk_size: int,
                  progress: Progress | None, total: int) -> dict:
    """Stream featurized chunks into ``tmp``; return the row and target cell counts."""
    n_t = len(table.target_names)
    graph = {k: NpyAppender(tmp / f"{k}.npy", dt, tail) for k, (dt, tail) in _GRAPH_ARRAYS.items()}
    per_mol = {"targets": NpyAppender(tmp / "targets.npy", np.float32, (n_t,)),
               "source_row": NpyAppender(tmp / "source_row.npy", np.int64),
               "n_rounds": NpyAppender(tmp / "n_rounds.npy", np.int32),
               "has_rings": NpyAppender(tmp / "has_rings.npy", np.bool_)}
    # molecule i owns offsets[i]:offsets[i + 1]; streamed too, so memory stays O(chunk)
    offsets = {k: NpyAppender(tmp / f"{name}.npy", np.int64)
               for name, k in (("atom_offsets", "n_atoms"), ("edge_offsets", "n_edges"),
                               ("ring_offsets", "n_rings"))}
    ends = dict.fromkeys(offsets, 0)
    for w in offsets.values():
        w.append(np.zeros(1, np.int64))
    read = kept = 0
    missing = np.zeros(n_t, np.int64)                 # NaN targets among the kept rows
    with open(tmp / "smiles.txt", "w", encoding="utf-8") as smiles_f, \
            open(tmp / REJECTS, "w", encoding="utf-8", newline="") as rejects_f, \
            open(tmp / REJECTED_CELLS, "w", encoding="utf-8", newline="") as cells_f:
        rejects = csv.writer(rejects_f)
        rejects.writerow(["row", "smiles", "reason"])
        cells = csv.writer(cells_f)
        cells.writerow(["row", "target", "value"])
        # filled by the reader, in this process
        not_numbers = NotNumbers(table.target_names,
                                 sink=lambda row, name, value: cells.writerow([row, name, value]))
        for out in _map_chunks(_chunks(table.rows(not_numbers), chunk_size), n_jobs, rounds):
            for k, w in graph.items():
                w.append(out[k])
            per_mol["targets"].append(out["targets"])
            per_mol["source_row"].append(out["rows"])
            per_mol["n_rounds"].append(out["n_rounds"])
            per_mol["has_rings"].append(out["has_rings"])
            for k, w in offsets.items():
                cum = ends[k] + np.cumsum(out[k], dtype=np.int64)
                w.append(cum)
                ends[k] = int(cum[-1]) if len(cum) else ends[k]
            smiles_f.writelines(s + "\n" for s in out["smiles"])
            rejects.writerows(out["rejects"])
            kept += len(out["smiles"])
            missing += np.isnan(out["targets"]).sum(axis=0)
            read += len(out["smiles"]) + len(out["rejects"])
            if progress:
                progress(read, max(total, read))
    for w in (*graph.values(), *per_mol.values(), *offsets.values()):
        w.close()
    return {"rows_read": read, "rows_kept": kept, "rows_rejected": read - kept,
            "targets_missing": dict(zip(table.target_names, missing.tolist())),
            "targets_not_numbers": not_numbers.as_dict()}
