"""The featurizing worker's side of ``build_store``: a block of input (raw lines, CSV records
split by the main process, SDF records or Parquet columns) -> rows -> compact arrays.

A block's rows are numbered from 1 inside the block; the main process adds the rows of the
blocks before it. Row semantics are those of ``readers.py``: blank lines are not rows, a CSV row
with the wrong number of fields is rejected with its reason, target cells that are not numbers
are NaN and reported (``cells``) so that the main process can count them (``NotNumbers``).
"""

from __future__ import annotations

import math
import os
import signal
from dataclasses import dataclass

import numpy as np
from rdkit import Chem

from molpipe.chem.batch import featurize_batch
from molpipe.chem.featurize import FeaturizationError
from molpipe.data.readers import _fit, smi_words
from molpipe.data.text import not_a_number, to_float

#: test hook: a featurizing *worker process* kills itself (SIGKILL) on this SMILES; with
#: ``KILL_ONCE`` naming a file, only the first time (it creates the file)
KILL_ENV, KILL_ONCE_ENV = "MOLPIPE_TEST_KILL_SMILES", "MOLPIPE_TEST_KILL_ONCE"
_IN_WORKER = False


@dataclass(frozen=True)
class Spec:
    """How to read a block's rows.

    Fields
    ------
    kind : "csv", "smi", "sdf" or "parquet".
    delimiter : the CSV delimiter.
    width : the CSV header's number of fields.
    smiles : the CSV SMILES column's index.
    targets : the CSV target columns' indices (SDF: property names; Parquet: positions).
    rounds : (min_rounds, max_rounds).
    """

    kind: str
    delimiter: str = ","
    width: int = 1
    smiles: int = 0
    targets: tuple = ()
    rounds: tuple[int, int] = (2, 6)


_BARE_CR = ("a carriage return inside the line (old Mac line ends?): a SMILES file has one "
            "molecule a line, lines ending in \\n or \\r\\n")


def records(spec: Spec, kind: str, payload) -> list:
    """The block's records, one per row: CSV fields lists (or a FeaturizationError), SMILES
    (the first word of a SMILES file's line), SDF records (lists of lines) or Parquet
    (smiles, cells) pairs. A ``kind`` "records" block (a piece of a split block) is already a
    list of (row, record) pairs and is returned as it is."""
    if kind == "records":
        return payload
    if kind == "lines":                                  # CSV or SMI text, no quotes
        out = []
        first = spec.kind == "smi" and payload[1]
        for n, line in enumerate(payload[0].split("\n")):
            if line.endswith("\r"):
                line = line[:-1]
            if spec.kind == "smi":
                words = smi_words(line, first and n == 0)
                if words and "\r" in line:      # not a name: more molecules, on bare \r ends
                    out.append(FeaturizationError(_BARE_CR))
                elif words:
                    out.append(words[0])
            elif line:
                out.append(line.split(spec.delimiter))
        return out
    if kind == "sdf":                                    # whole records, "$$$$" lines
        out, lines = [], []
        pieces = payload.split("\n")
        last = pieces.pop()                              # "" after a final newline
        for line in pieces:
            if line.startswith("$$$$"):
                out.append(lines)
                lines = []
            else:
                lines.append(line + "\n")
        if last and not last.startswith("$$$$"):
            lines.append(last)
        elif last:
            out.append(lines)
            lines = []
        if any(line.strip() for line in lines):
            out.append(lines)
        return out
    if kind == "columns":
        smiles, cells = payload
        return list(zip(smiles, zip(*cells))) if cells else [(s, ()) for s in smiles]
    raise ValueError(f"unknown block kind {kind!r}")


def read_row(spec: Spec, record):
    """(SMILES or Mol or FeaturizationError, targets: n_t floats (NaN where missing),
    [(j, cell)] the target cells that are not numbers)."""
    n_t = len(spec.targets)
    if spec.kind == "csv":
        if isinstance(record, FeaturizationError):
            return record, [math.nan] * n_t, []
        fields = _fit(record, spec.width)
        if fields is None:
            return (FeaturizationError(f"row has {len(record)} fields, the header {spec.width}"),
                    [math.nan] * n_t, [])
        cells = [fields[c] for c in spec.targets]
        item = fields[spec.smiles].strip()
    elif spec.kind == "smi":
        return record, [], []
    elif spec.kind == "sdf":
        from molpipe.data.sdf import _split_record, mol_from_block

        block, props = _split_record(record)
        cells = [props.get(t) for t in spec.targets]
        item = mol_from_block(block)
    else:                                                # parquet: (smiles, cells)
        smiles, cells = record
        item = "" if smiles is None else smiles
    if not cells:
        return item, [], []
    y = [to_float(c) for c in cells]
    bad = [(j, c) for j, (v, c) in enumerate(zip(y, cells)) if v != v and not_a_number(c)]
    return item, y, bad


def _kill_hook(k: int, item) -> None:
    """The test hook (``KILL_ENV``): only in a pool worker, only for that SMILES."""
    if not _IN_WORKER or item != os.environ.get(KILL_ENV):
        return
    once = os.environ.get(KILL_ONCE_ENV)
    if once:
        try:
            os.close(os.open(once, os.O_CREAT | os.O_EXCL))
        except FileExistsError:
            return
    os.kill(os.getpid(), signal.SIGKILL)


def init_worker() -> None:
    """Pool initializer: mark this process a worker (for the test hook)."""
    global _IN_WORKER
    _IN_WORKER = True


def featurize_block(spec: Spec, kind: str, payload) -> dict:
    """Featurize one block: its rows' compact arrays, targets, SMILES, rejects and cells.

    Returns a dict: ``n_rows``; ``rows`` (k,) int64 the kept rows (1-based in the block);
    the ``Compact.arrays()`` and n_atoms, n_bonds, n_rings, n_ring_atoms, n_rounds,
    has_rings; ``targets`` (k, n_t) float32; ``smiles`` the kept SMILES, one a line;
    ``rejects`` [(row, text, reason)]; ``cells`` [(row, target index, cell)] not numbers.
    """
    recs = records(spec, kind, payload)
    items, ys, texts, rows, rejects, cells = [], [], [], [], [], []
    for k, rec in enumerate(recs):
        row = rec[0] if kind == "records" else k + 1
        rec = rec[1] if kind == "records" else rec
        item, y, bad = read_row(spec, rec)
        cells += [(row, j, c) for j, c in bad]
        if isinstance(item, Exception):
            rejects.append((row, "", str(item) or type(item).__name__))
            continue
        text = item if isinstance(item, str) else ""
        if isinstance(item, Chem.Mol):
            try:
                text = Chem.MolToSmiles(item)
            except Exception as err:
                rejects.append((row, "", str(err) or type(err).__name__))
                continue
        items.append(item)
        ys.append(y)
        texts.append(text)
        rows.append(row)
    codes, kept, errors = featurize_batch(items, min_rounds=spec.rounds[0],
                                          max_rounds=spec.rounds[1], on_item=_kill_hook)
    rejects += [(rows[k], texts[k], reason) for k, reason in errors]
    rejects.sort(key=lambda r: r[0])
    n_t = len(spec.targets)
    out = {"n_rows": len(recs), "rows": np.array([rows[k] for k in kept], np.int64),
           "targets": (np.array([ys[k] for k in kept], np.float32).reshape(len(kept), n_t) if n_t
                       else np.zeros((len(kept), 0), np.float32)),
           "smiles": "".join(texts[k] + "\n" for k in kept), "rejects": rejects,
           "cells": cells, "n_atoms": codes.n_atoms, "n_bonds": codes.n_bonds,
           "n_rings": codes.n_rings, "n_ring_atoms": codes.n_ring_atoms,
           "n_rounds": codes.n_rounds, "has_rings": codes.has_rings}
    out.update(codes.arrays())
    return out


def dead_row(spec: Spec, record, row: int, how: str) -> dict:
    """The block result of one row whose featurizing process died: a reject."""
    text = ""
    if spec.kind == "csv" and isinstance(record, list) and len(record) > spec.smiles:
        text = record[spec.smiles].strip()
    elif spec.kind in ("smi",) and isinstance(record, str):
        text = record
    elif spec.kind == "parquet" and isinstance(record, tuple):
        text = record[0] or ""
    out = featurize_block(spec, "records", [])
    out.update(n_rows=1, rejects=[(row, text, f"the featurizing process died on this row ({how})")])
    return out
