"""σ of a finished run with a mean-variance head (``--loss mve``): its calibration on the
validation and test splits in report.json, test_predictions.csv with a ``<target>_std``
column, and with ``--recalibrate`` the scale fitted on the validation split stored in the
model's config.json (``std_scale``), which every prediction then applies."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from molpipe.inference.predict import Predictor


def split_predictions(predictor: Predictor, run_dir: Path, parts=("val", "test")) -> tuple:
    """(store, {part: rows}, {part: (P, S)}) of the run's own split parts."""
    from molpipe.inference.evaluate import predict_rows, run_store

    split_doc = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
    store, size = run_store(run_dir, predictor)
    rows = {k: np.asarray(split_doc[k], np.int64) for k in parts}
    return store, rows, {k: predict_rows(predictor, store, r, size, with_std=True)
                         for k, r in rows.items()}


def calibrate_run(run_dir: str | Path, recalibrate: bool) -> dict:
    """Score (and with ``recalibrate`` fit) σ of the mve run ``run_dir``; returns
    {"std_scale": list or None, "calibration": {"val": ..., "test": ...}}."""
    from molpipe.training.calibration import calibration_table, std_scale
    from molpipe.training.run_dir import replace_json

    run_dir = Path(run_dir)
    predictor = Predictor.load(run_dir)
    store, rows, out = split_predictions(predictor, run_dir)
    Y = {k: store.targets[r] for k, r in rows.items()}
    scale = None
    if recalibrate and len(rows["val"]):
        scale = std_scale(Y["val"], *out["val"])
        path = Path(predictor.config["_dir"]) / "config.json"
        doc = json.loads(path.read_text(encoding="utf-8"))
        doc["std_scale"] = scale
        replace_json(path, doc)
        out = {k: (p, s * np.asarray(scale)) for k, (p, s) in out.items()}
    result = {"std_scale": scale,
              "calibration": {k: calibration_table(predictor.targets, Y[k], *out[k])
                              for k in out}}
    write_test_predictions(run_dir / "test_predictions.csv", store, rows["test"],
                           predictor.targets, *out["test"])
    report_path = run_dir / "report.json"
    report = json.loads(report_path.read_text(encoding="utf-8"))
    report.update(result)
    replace_json(report_path, report)
    return result


def write_test_predictions(path: Path, store, rows, targets, P, S) -> None:
    """test_predictions.csv with each target's prediction and σ."""
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "smiles", *targets, *(f"pred_{t}" for t in targets),
                    *(f"{t}_std" for t in targets)])
        smiles = store.smiles
        for i, r in enumerate(rows):
            w.writerow([int(store.source_row[r]), smiles[r], *store.targets[r].tolist(),
                        *P[i].tolist(), *S[i].tolist()])
