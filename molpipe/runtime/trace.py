"""Trace: which worker was busy on which instance, when; utilization; JSON and CSV timelines."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

FIELDS = ("worker", "t_start", "t_end", "key", "stage", "step", "direction")


def utilization(busy: dict[int, float], wall: float) -> dict[int, float]:
    """Busy seconds over wall seconds, per worker, clipped to [0, 1]."""
    return {w: (min(1.0, max(0.0, b / wall)) if wall > 0 else 0.0) for w, b in busy.items()}


def to_arrays(entries: list[tuple]) -> dict[str, np.ndarray]:
    """Trace entries as columns: numeric arrays for times/worker/step, object for the rest.

    Returns
    -------
    dict with ``worker`` (n,) int64, ``t_start``, ``t_end`` (n,) float64 (seconds from the
    run's start), ``step`` (n,) int64, ``key``, ``stage``, ``direction`` (n,) object
    """
    cols = list(zip(*entries)) if entries else [()] * len(FIELDS)
    out = dict(zip(FIELDS, cols))
    return {
        "worker": np.asarray(out["worker"], dtype=np.int64),
        "t_start": np.asarray(out["t_start"], dtype=np.float64),
        "t_end": np.asarray(out["t_end"], dtype=np.float64),
        "key": np.asarray(out["key"], dtype=object),
        "stage": np.asarray(out["stage"], dtype=object),
        "step": np.asarray(out["step"], dtype=np.int64),
        "direction": np.asarray(out["direction"], dtype=object),
    }


def _plain(key):
    return key if key is None or isinstance(key, (int, float, str)) else str(key)


def write_trace(path: str | Path, entries: list[tuple], *,
                util: dict[int, float] | None = None, wall: float | None = None) -> Path:
    """Write the timeline as CSV (``.csv``) or JSON (anything else); return the path.

    JSON holds ``{"fields": [...], "entries": [[...], ...], "wall": s, "utilization":
    {worker: fraction}}``; CSV holds one row per busy interval with the FIELDS header.
    """
    path = Path(path)
    rows = [(int(w), float(a), float(b), _plain(k), s, int(t), d)
            for w, a, b, k, s, t, d in entries]
    if path.suffix.lower() == ".csv":
        with path.open("w", newline="") as fh:
            writer = csv.writer(fh)
            writer.writerow(FIELDS)
            writer.writerows(rows)
    else:
        doc = {"fields": list(FIELDS), "entries": rows, "wall": wall,
               "utilization": {str(w): u for w, u in (util or {}).items()}}
        path.write_text(json.dumps(doc))
    return path
