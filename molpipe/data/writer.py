"""The graph store's files, written block by block, and the journal that lets an interrupted
build resume: every few seconds the lengths of every file and the input position (with the
sha256 of the input up to it) are committed to ``journal.json``; a resumed build cuts every
file back to its committed length and goes on from that position."""

from __future__ import annotations

import csv
import io
import json
import os
import time
from pathlib import Path

import numpy as np

from molpipe.chem.compact import ATOM_CODES
from molpipe.data.npyfile import HEADER, NpyAppender
from molpipe.data.text import NotNumbers

#: bump when the store's files change: a store of another format must be rebuilt
STORE_FORMAT = 2
JOURNAL = "journal.json"
REJECTS = "rejects.csv"
#: target cells that were not numbers (row, target, value), read as missing; their rows kept
REJECTED_CELLS = "rejected_cells.csv"
SMILES = "smiles.txt"
#: per-atom, per-bond and per-ring arrays: file name -> (dtype, tail shape)
GRAPH_ARRAYS = {
    "atoms": (np.uint8, (ATOM_CODES,)), "fragment": (np.uint16, ()),
    "bonds": (np.uint16, (2,)), "bond_codes": (np.uint8, ()),
    "ring_atoms": (np.uint16, ()), "ring_sizes": (np.uint16, ()), "ring_system": (np.uint16, ()),
}
#: per-molecule offsets (n + 1,) int64: file name -> the count it sums
OFFSETS = {"atom_offsets": "n_atoms", "bond_offsets": "n_bonds", "ring_offsets": "n_rings",
           "ring_atom_offsets": "n_ring_atoms", "smiles_offsets": "smiles"}
COMMIT_SECONDS = 5.0


def store_arrays(n_targets: int) -> dict[str, tuple]:
    """Every ``.npy`` of a store, in journal order: file name -> (dtype, tail shape). One
    table, so the writer and the journal's length check agree on each file's row size."""
    per_mol = {"targets": (np.float32, (n_targets,)), "source_row": (np.int64, ()),
               "n_rounds": (np.int32, ()), "has_rings": (np.bool_, ())}
    return {**GRAPH_ARRAYS, **per_mol, **dict.fromkeys(OFFSETS, (np.int64, ()))}


class StoreWriter:
    """Append featurized blocks to the store files in ``directory``.

    ``state`` is a journal's state (a resumed build) or None (a new one); ``key`` (the
    build's settings) is written into the journal.
    """

    def __init__(self, directory: Path, target_names: tuple[str, ...], state: dict | None,
                 key: dict):
        self.dir = Path(directory)
        self.key = key
        n_t = len(target_names)
        state = state or {}
        lengths = state.get("lengths", {})
        self.names = target_names
        #: every ``.npy`` of the store by file name
        self.npy = {k: NpyAppender(self.dir / f"{k}.npy", dt, tail, lengths.get(k, 0))
                    for k, (dt, tail) in store_arrays(n_t).items()}
        self.ends = dict(state.get("ends", dict.fromkeys(OFFSETS.values(), 0)))
        if not state:
            for k in OFFSETS:
                self.npy[k].append(np.zeros(1, np.int64))
        text = state.get("text", {})
        self.text = {name: _open_text(self.dir / name, text.get(name)) for name in
                     (SMILES, REJECTS, REJECTED_CELLS)}
        if not state:
            self.text[REJECTS].write(b"row,smiles,reason\r\n")
            self.text[REJECTED_CELLS].write(b"row,target,value\r\n")
        self.rows_read = state.get("rows_read", 0)
        self.rows_kept = state.get("rows_kept", 0)
        self.missing = np.array(state.get("missing", [0] * n_t), np.int64)
        self.not_numbers = NotNumbers(target_names, sink=self._cell)
        for name in ("count", "rows", "values"):
            if name in state.get("not_numbers", {}):
                setattr(self.not_numbers, name, state["not_numbers"][name])
        self.position, self.digest = state.get("position", 0), state.get("digest", "")
        self.piece_rows = 0                    # rows of the pieces of a split block so far
        self.snapshot = self._state() if state else None
        self.last_commit = time.monotonic()

    def _cell(self, row: int, name: str, value: str) -> None:
        self.text[REJECTED_CELLS].write(_csv_line([row, name, value]))

    def add(self, result: dict, final: bool, end: int, digest: str) -> None:
        """Write one block's (or piece's) result; ``end``/``digest``: the input after it."""
        base = self.rows_read
        for k in GRAPH_ARRAYS:
            self.npy[k].append(result[k])
        k = len(result["rows"])
        self.npy["targets"].append(result["targets"])
        self.npy["source_row"].append(result["rows"] + base)
        self.npy["n_rounds"].append(result["n_rounds"])
        self.npy["has_rings"].append(result["has_rings"])
        smiles = result["smiles"].encode("utf-8")
        lengths = {"smiles": _line_lengths(smiles, k)}
        for name, count in OFFSETS.items():
            n = lengths["smiles"] if count == "smiles" else result[count]
            cum = self.ends[count] + np.cumsum(n, dtype=np.int64)
            self.npy[name].append(cum)
            self.ends[count] = int(cum[-1]) if len(cum) else self.ends[count]
        self.text[SMILES].write(smiles)
        if result["rejects"]:
            self.text[REJECTS].write(b"".join(_csv_line([base + r, s, why])
                                              for r, s, why in result["rejects"]))
        for r, j, value in result["cells"]:
            self.not_numbers.check(j, base + r, value)
        self.rows_kept += k
        self.missing += np.isnan(result["targets"]).sum(axis=0)
        self.piece_rows += result["n_rows"]
        if final:
            self.rows_read += self.piece_rows
            self.piece_rows = 0
            self.position, self.digest = end, digest
            self.snapshot = self._state()
            if time.monotonic() - self.last_commit > COMMIT_SECONDS:
                self.commit()

    def _state(self) -> dict:
        """The state after the last whole block, as the journal keeps it."""
        return {"position": self.position, "digest": self.digest, "rows_read": self.rows_read,
                "rows_kept": self.rows_kept, "lengths": {k: w.n for k, w in self.npy.items()},
                "ends": dict(self.ends),
                "text": {name: f.tell() for name, f in self.text.items()},
                "missing": self.missing.tolist(),
                "not_numbers": {"count": list(self.not_numbers.count),
                                "rows": [list(r) for r in self.not_numbers.rows],
                                "values": [list(v) for v in self.not_numbers.values]}}

    def commit(self) -> None:
        """Flush every file and write the journal of the last whole block (atomically)."""
        if self.snapshot is None:
            return
        # flushed, not synced: a killed process loses nothing; after a power cut a file shorter
        # than the journal says makes the next build start over (``read_journal``)
        for w in self.npy.values():
            w.flush()
        for f in self.text.values():
            f.flush()
        path = self.dir / JOURNAL
        tmp = path.with_suffix(".tmp")
        with open(tmp, "w", encoding="utf-8") as f:
            json.dump({"key": self.key, **self.snapshot}, f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
        self.last_commit = time.monotonic()

    def close(self) -> None:
        """Finish every file (the ``.npy`` headers get their final shapes)."""
        for w in self.npy.values():
            w.close()
        for f in self.text.values():
            f.close()

    def abandon(self) -> None:
        """Close the files as they are (the journal says how much of them counts)."""
        for w in self.npy.values():
            w.abandon()
        for f in self.text.values():
            f.close()


def _open_text(path: Path, length: int | None):
    if length is None:
        return open(path, "wb")
    f = open(path, "r+b")
    f.truncate(length)
    f.seek(length)
    return f


def _csv_line(fields: list) -> bytes:
    out = io.StringIO()
    csv.writer(out).writerow(fields)
    return out.getvalue().encode("utf-8")


def _line_lengths(text: bytes, k: int) -> np.ndarray:
    """(k,) bytes of each of the ``k`` newline-terminated lines of ``text``."""
    if k == 0:
        return np.zeros(0, np.int64)
    ends = np.flatnonzero(np.frombuffer(text, np.uint8) == 10) + 1
    return np.diff(ends, prepend=0).astype(np.int64)


def read_journal(directory: Path) -> dict | None:
    """The journal of a partial store directory, or None (also if a file is shorter than
    the journal says: the build must start over)."""
    directory = Path(directory)
    try:
        state = json.loads((directory / JOURNAL).read_text(encoding="utf-8"))
        arrays = store_arrays(len(state["key"]["targets"]))
        for name, n in state["lengths"].items():
            dtype, tail = arrays.get(name, (np.int64, ()))
            row = np.dtype(dtype).itemsize * int(np.prod(tail, dtype=np.int64))
            if (directory / f"{name}.npy").stat().st_size < HEADER + n * row:
                return None
        for name, n in state["text"].items():
            if (directory / name).stat().st_size < n:
                return None
    except (OSError, ValueError, KeyError, TypeError, AttributeError):
        return None
    return state
