"""The journal of observations: every row a service acknowledged, on disk before its receipt.

One JSON object a line, ``{"seq": n, "smiles": ..., "y": [value or null per target],
"t": unix seconds}``, sequence numbers from 1 without gaps. ``append`` writes a request's
rows and fsyncs the file before it returns their numbers, so a receipt is never given for a
row a crash could lose. A kill in the middle of a write leaves at most one torn last line,
which no receipt covered: opening the journal cuts it off (and says so in ``repaired``).
Rows the service could not read go to ``rejects.csv`` beside it, fsynced the same way.
"""

from __future__ import annotations

import csv
import io
import json
import math
import os
import threading
import time
from pathlib import Path

JOURNAL = "journal.jsonl"
REJECTS = "rejects.csv"


class JournalError(ValueError):
    """A journal line that is not a row: names the file and the line."""


class Journal:
    """Append-only, fsynced observations of one service directory."""

    def __init__(self, directory: str | Path, targets: list[str]):
        self.dir = Path(directory)
        self.dir.mkdir(parents=True, exist_ok=True)
        self.path = self.dir / JOURNAL
        self.targets = list(targets)
        self._lock = threading.Lock()
        self.repaired = self._repair()
        self.last_seq = self._last_seq()
        self.n_rejected = self._count_rejects()
        self._fd = os.open(self.path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)

    # -- writing ---------------------------------------------------------------------------
    def append(self, rows: list[tuple[str, list]], source: dict | None = None) -> list[int]:
        """Write ``(smiles, values)`` rows, fsync, return their sequence numbers.

        ``source`` (JSON-able, e.g. the file and byte offset they were read up to) is kept
        on every row: ``last_source`` finds it again after a restart.
        """
        if not rows:
            return []
        extra = {"src": source} if source is not None else {}
        with self._lock:
            first = self.last_seq + 1
            now = round(time.time(), 3)
            text = "".join(
                json.dumps({"seq": first + i, "smiles": smiles, "y": [_cell(v) for v in y],
                            "t": now, **extra}, separators=(",", ":")) + "\n"
                for i, (smiles, y) in enumerate(rows))
            _write_all(self._fd, text.encode())
            os.fsync(self._fd)
            self.last_seq = first + len(rows) - 1
        return list(range(first, first + len(rows)))

    def reject(self, rows: list[tuple[str, str]]) -> None:
        """Keep ``(smiles, reason)`` rows the service could not read (fsynced)."""
        if not rows:
            return
        with self._lock:
            path = self.dir / REJECTS
            new = not path.exists()
            buf = io.StringIO()
            writer = csv.writer(buf)
            if new:
                writer.writerow(["time", "smiles", "reason"])
            now = round(time.time(), 3)
            for smiles, reason in rows:
                writer.writerow([now, smiles, reason])
            with open(path, "a", encoding="utf-8", newline="") as f:
                f.write(buf.getvalue())
                f.flush()
                os.fsync(f.fileno())
            self.n_rejected += len(rows)

    def close(self) -> None:
        if self._fd >= 0:
            os.close(self._fd)
            self._fd = -1

    # -- reading ---------------------------------------------------------------------------
    def rows(self, after: int = 0):
        """Every row with ``seq > after`` as (seq, smiles, values), in order."""
        if not self.path.exists():
            return
        with open(self.path, encoding="utf-8") as f:
            for lineno, line in enumerate(f, 1):
                row = _parse(line, self.path, lineno, len(self.targets))
                if row[0] > after:
                    yield row

    def last_source(self, key: str, value) -> dict | None:
        """The ``source`` of the last row whose source has ``key == value``."""
        found = None
        if self.path.exists():
            with open(self.path, encoding="utf-8") as f:
                for line in f:
                    src = json.loads(line).get("src")
                    if isinstance(src, dict) and src.get(key) == value:
                        found = src
        return found

    def _repair(self) -> int:
        """Cut a torn last line (a write a kill interrupted); the bytes removed."""
        if not self.path.exists():
            return 0
        with open(self.path, "rb+") as f:
            data = f.read()
            if not data or data.endswith(b"\n"):
                return 0
            keep = data.rfind(b"\n") + 1
            f.truncate(keep)
            f.flush()
            os.fsync(f.fileno())
            return len(data) - keep

    def _last_seq(self) -> int:
        last = 0
        for seq, _, _ in self.rows():
            if seq != last + 1:
                raise JournalError(f"{self.path}: row {seq} follows row {last}: the journal "
                                   "has a gap (was it edited?)")
            last = seq
        return last

    def _count_rejects(self) -> int:
        path = self.dir / REJECTS
        if not path.exists():
            return 0
        with open(path, encoding="utf-8", newline="") as f:
            return max(0, sum(1 for _ in csv.reader(f)) - 1)


def _cell(v):
    return None if v is None or (isinstance(v, float) and math.isnan(v)) else float(v)


def _write_all(fd: int, data: bytes) -> None:
    view = memoryview(data)
    while view:
        n = os.write(fd, view)
        view = view[n:]


def _parse(line: str, path: Path, lineno: int, n_targets: int) -> tuple[int, str, list]:
    try:
        doc = json.loads(line)
        seq, smiles, y = int(doc["seq"]), str(doc["smiles"]), doc["y"]
        if not isinstance(y, list) or len(y) != n_targets:
            raise ValueError(f"{len(y) if isinstance(y, list) else 'no'} values for "
                             f"{n_targets} targets")
        values = [float("nan") if v is None else float(v) for v in y]
    except (ValueError, KeyError, TypeError) as err:
        raise JournalError(f"{path}: line {lineno} is not a journal row: {err}") from None
    return seq, smiles, values
