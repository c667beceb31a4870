"""``molpipe train --follow FILE``: the online loop without HTTP, fed by rows appended to a CSV.

The file is read from where the journal says the last run stopped (the byte offset after
the last row it journaled), whole lines only: a line still being written waits for its
newline. Every batch of new rows goes through ``OnlineModel.observe``, as /observe's do.
"""

from __future__ import annotations

import csv
import io
import math
import time
from pathlib import Path


class FollowError(ValueError):
    """The followed file cannot be read as the model's rows: names the file and why."""


def _columns(header: list[str], targets: list[str], path: Path) -> tuple[int, list[int]]:
    names = [h.strip() for h in header]
    lower = [h.lower() for h in names]
    smiles = lower.index("smiles") if "smiles" in lower else 0
    missing = [t for t in targets if t not in names]
    if missing:
        raise FollowError(f"{path}: no column {missing[0]!r} (the model's targets are "
                          f"{', '.join(targets)}; the file has {', '.join(names)})")
    return smiles, [names.index(t) for t in targets]


def file_targets(path: Path) -> list[str]:
    """The columns of ``path``'s header besides the SMILES column (for a new model)."""
    with open(path, encoding="utf-8", newline="") as f:
        header = next(csv.reader(f), None)
    if not header:
        raise FollowError(f"{path}: no header line yet; give the targets with --target")
    lower = [h.strip().lower() for h in header]
    smiles = lower.index("smiles") if "smiles" in lower else 0
    return [h.strip() for i, h in enumerate(header) if i != smiles]


def _value(cell: str) -> float:
    cell = cell.strip()
    if not cell:
        return float("nan")
    v = float(cell)
    if not math.isfinite(v):
        raise ValueError(f"{cell!r} is not a finite number")
    return v


def follow(model, path: str | Path, idle: float | None = None, poll: float = 0.5,
           on_batch=None, should_stop=lambda: False) -> dict:
    """Observe the rows of CSV ``path`` as they are appended; return the totals.

    Stops when ``should_stop()`` says so, or after ``idle`` seconds without a new row once
    every observed row is folded into the model. ``on_batch(receipt, status)`` after each
    batch.
    """
    path = Path(path)
    key = str(path.resolve())
    src = model.journal.last_source("file", key)
    offset = int(src["end"]) if src else 0
    line = 1 + _read_from(path, 0)[:offset].count(b"\n")   # the file's line at ``offset``
    columns = None
    totals = {"accepted": 0, "rejected": 0}
    last_new = time.monotonic()
    while not should_stop():
        data = _read_from(path, offset)
        if offset == 0 and data:
            end = data.find(b"\n")
            if end < 0:
                time.sleep(poll)
                continue
            header = next(csv.reader([data[:end].decode("utf-8")]))
            columns = _columns(header, model.targets, path)
            offset, line = end + 1, 2
            data = data[end + 1:]
        elif columns is None and path.exists():
            with open(path, encoding="utf-8", newline="") as f:
                columns = _columns(next(csv.reader(f)), model.targets, path)
        end = data.rfind(b"\n") + 1
        if end:
            rows, bad = _parse(data[:end], columns, f"{path.name} line", line)
            offset += end
            line += data[:end].count(b"\n")
            model.journal.reject(bad)
            receipt = model.observe(rows, {"file": key, "end": offset}) if rows else \
                {"accepted": 0, "rejected": []}
            totals["accepted"] += receipt["accepted"]
            totals["rejected"] += len(receipt["rejected"]) + len(bad)
            last_new = time.monotonic()
            if on_batch is not None:
                on_batch(receipt, model.status())
            continue
        pending = model.journal.last_seq - len(model.folded)
        if idle is not None and not pending and time.monotonic() - last_new >= idle:
            break
        time.sleep(poll)
    return totals


def _read_from(path: Path, offset: int) -> bytes:
    """The bytes of ``path`` past ``offset`` (b"" while it does not exist): each poll reads
    only what was appended."""
    try:
        with open(path, "rb") as f:
            f.seek(offset)
            return f.read()
    except FileNotFoundError:
        return b""


def _parse(chunk: bytes, columns, where: str, first_line: int):
    """(rows, rejects) of complete CSV lines, the first of them line ``first_line``; a
    reject's reason names ``where`` (the file) and its line."""
    smiles_col, target_cols = columns
    rows, bad = [], []
    reader = csv.reader(io.StringIO(chunk.decode("utf-8", errors="replace")))
    for rec in reader:
        if not rec or not any(c.strip() for c in rec):
            continue
        at = f"{where} {first_line + reader.line_num - 1}"
        try:
            smiles = rec[smiles_col].strip()
            values = [_value(rec[j]) if j < len(rec) else float("nan") for j in target_cols]
        except (IndexError, ValueError) as err:
            bad.append((",".join(rec)[:200], f"{at}: not a row of SMILES and numbers: {err}"))
            continue
        if all(math.isnan(v) for v in values):
            bad.append((smiles, f"{at}: no target value"))
            continue
        rows.append((smiles, values))
    return rows, bad
