"""Runs side by side: ``molpipe compare RUN_DIR...`` and the summary of ``--replicates``.

A run directory's ``report.json`` gives one row (data set, split, seed, epochs, test and
validation metrics, training molecules/s, wall seconds); a replicates directory (its
``summary.json``, written by ``molpipe train --replicates N``) gives the mean ± SD of its
runs' rows.
"""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np

SUMMARY = "summary.json"
#: the summary metrics a row holds (as test_<m> and val_<m>), by task
METRICS = {"regression": ("rmse", "mae", "r2"), "classification": ("auc", "prc_auc")}


class CompareError(ValueError):
    """A directory that is neither a run nor a replicates directory (names it and why)."""


def run_row(run_dir: str | Path) -> dict:
    """One run's row from its report.json."""
    path = Path(run_dir) / "report.json"
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise CompareError(f"{run_dir}: no report.json (not a finished run of molpipe "
                           "train)") from None
    except (OSError, ValueError) as err:
        raise CompareError(f"{path}: unreadable ({err})") from None
    task = report.get("task", "regression")
    row = {"run": str(run_dir), "dataset": report.get("dataset"), "task": task,
           "split": report.get("split"), "seed": report.get("seed"),
           "epochs": report.get("epochs"), "runs": 1}
    for key in METRICS.get(task, ()):
        row[f"test_{key}"] = _number(report.get("test_summary", {}).get(key))
        row[f"val_{key}"] = _number(report.get("val_summary", {}).get(key))
    row["train_molecules_per_second"] = _number(report.get("train_molecules_per_second"))
    row["wall_seconds"] = _number(report.get("wall_seconds"))
    return row


def summarize(rows: list[dict], where: str = "") -> dict:
    """Mean and SD (ddof 1; 0 for one run) of every number of ``rows`` (runs of one set)."""
    if not rows:
        raise CompareError(f"{where}: no runs to summarize")
    out = {k: rows[0][k] for k in ("dataset", "task", "split")}
    out.update(run=where, runs=len(rows), seeds=[r["seed"] for r in rows],
               epochs=[r["epochs"] for r in rows])
    for key in rows[0]:
        values = [r.get(key) for r in rows]
        if key in ("seed", "epochs", "runs") or not all(isinstance(v, (int, float))
                                                          or v is None for v in values):
            continue
        v = np.array([np.nan if x is None else x for x in values], np.float64)
        v = v[np.isfinite(v)]
        out[key] = float(v.mean()) if v.size else None
        out[f"{key}_sd"] = float(v.std(ddof=1)) if v.size > 1 else (0.0 if v.size else None)
    return out


def row_of(directory: str | Path) -> dict:
    """A run's row, or a replicates directory's summary."""
    directory = Path(directory)
    if (directory / SUMMARY).is_file():
        try:
            return json.loads((directory / SUMMARY).read_text(encoding="utf-8"))["summary"]
        except (OSError, ValueError, KeyError) as err:
            raise CompareError(f"{directory / SUMMARY}: unreadable ({err})") from None
    return run_row(directory)


def write_summary(out_dir: Path, run_dirs: list[Path]) -> dict:
    """``summary.json`` of a replicates directory: each run's row and their mean ± SD."""
    rows = [run_row(d) for d in run_dirs]
    doc = {"runs": rows, "summary": summarize(rows, str(out_dir))}
    (out_dir / SUMMARY).write_text(json.dumps(doc, indent=2), encoding="utf-8")
    return doc


def _number(v):
    return float(v) if isinstance(v, (int, float)) and math.isfinite(v) else None
