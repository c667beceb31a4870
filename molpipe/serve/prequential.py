"""Prequential evaluation: every observed row is predicted before it is trained on.

The error of those predictions, over the last ``window`` rows, is the honest measure of a
model that learns while it serves (each prediction is of a row the model had not seen).
``Prequential`` keeps the rows' (true, predicted) values in arrival order, appends each to
``prequential.csv`` (seq, time, version, then per target true and predicted), and gives the
windowed metric and its curve.
"""

from __future__ import annotations

import csv
import threading
import time
from pathlib import Path

import numpy as np

FILE = "prequential.csv"
WINDOW = 200


class Prequential:
    """Windowed prequential error of one service: RMSE per target (classification: of the
    probability against the 0/1 label, the square root of the Brier score)."""

    def __init__(self, directory: Path, targets: list[str], task: str, window: int = WINDOW,
                 every: int = 20):
        self.path = Path(directory) / FILE
        self.targets, self.task, self.window, self.every = list(targets), task, window, every
        self._lock = threading.Lock()
        self.y: list[np.ndarray] = []
        self.p: list[np.ndarray] = []
        self.curve: list[dict] = []           # {"rows", "t", "error"} every ``every`` rows
        new = not self.path.exists()
        self._f = open(self.path, "a", encoding="utf-8", newline="")
        self._w = csv.writer(self._f)
        if new:
            self._w.writerow(["seq", "time", "version"]
                             + [c for t in self.targets for c in (t, f"{t}_pred")])
            self._f.flush()

    @property
    def metric(self) -> str:
        return "rmse" if self.task == "regression" else "root Brier"

    def add(self, seqs, Y: np.ndarray, P: np.ndarray, version: int) -> None:
        """Rows ``seqs`` with true ``Y`` and predicted ``P`` (n, n_targets), data units."""
        now = time.time()
        with self._lock:
            for seq, y, p in zip(seqs, Y, P):
                self.y.append(np.asarray(y, np.float64))
                self.p.append(np.asarray(p, np.float64))
                self._w.writerow([seq, round(now, 3), version]
                                 + [f"{v:.6g}" for pair in zip(y, p) for v in pair])
                if len(self.y) % self.every == 0:
                    self.curve.append({"rows": len(self.y), "t": round(now, 3),
                                       "error": self._error_locked()})
            self._f.flush()

    def error(self) -> dict:
        """{target: error over the last ``window`` rows} (NaN where none is known)."""
        with self._lock:
            return self._error_locked()

    def _error_locked(self) -> dict:
        if not self.y:
            return {t: float("nan") for t in self.targets}
        last = windowed_error(np.array(self.y[-self.window:]), np.array(self.p[-self.window:]),
                              self.window)[-1]
        return dict(zip(self.targets, map(float, last)))

    def __len__(self) -> int:
        return len(self.y)

    def close(self) -> None:
        self._f.close()


def read_prequential(path: str | Path) -> tuple[list[str], np.ndarray, np.ndarray, np.ndarray]:
    """(targets, seq (n,), Y (n, t), P (n, t)) of a ``prequential.csv``; a row predicted
    again after a restart (it was not yet folded into the snapshot) counts once, its last."""
    with open(path, encoding="utf-8", newline="") as f:
        reader = csv.reader(f)
        header = next(reader)
        rows = {}
        for r in reader:
            if len(r) == len(header):
                rows[int(r[0])] = r
    targets = header[3::2]
    order = sorted(rows)
    vals = np.array([[float(v) for v in rows[s][3:]] for s in order]).reshape(len(order), -1)
    return targets, np.array(order, np.int64), vals[:, 0::2], vals[:, 1::2]


def windowed_error(Y: np.ndarray, P: np.ndarray, window: int = WINDOW) -> np.ndarray:
    """RMSE over the trailing ``window`` rows at every row (n, t); NaN before any value."""
    n, t = Y.shape
    err = (Y - P) ** 2
    ok = np.isfinite(err)
    err = np.where(ok, err, 0.0)
    cs = np.vstack([np.zeros((1, t)), np.cumsum(err, axis=0)])
    cn = np.vstack([np.zeros((1, t)), np.cumsum(ok, axis=0)])
    lo = np.maximum(np.arange(1, n + 1) - window, 0)
    hi = np.arange(1, n + 1)
    num, den = cs[hi] - cs[lo], cn[hi] - cn[lo]
    with np.errstate(invalid="ignore", divide="ignore"):
        return np.sqrt(num / den)
