"""Evaluate a trained model: metrics on a labelled file, a bundled data set, or the run's test split."""

from __future__ import annotations

import json
from dataclasses import fields
from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError
from molpipe.data.store import release_pages
from molpipe.io.model import ModelError
from molpipe.training.settings import TrainConfig
from molpipe.inference.predict import Predictor


def _report(run_dir: Path) -> dict:
    path = run_dir / "report.json"
    if not path.is_file():
        raise ModelError(f"{run_dir}: no report.json, so no test split to evaluate on; "
                         "give a labelled file or data set name")
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
        split = json.loads((run_dir / "split.json").read_text(encoding="utf-8"))
        rows = np.asarray(split["test"], dtype=np.int64)
    except (OSError, ValueError, KeyError, TypeError) as err:
        raise ModelError(f"{run_dir}: unreadable report.json or split.json ({err})") from None
    if not isinstance(report, dict) or "dataset" not in report:
        raise ModelError(f"{path}: names no data set")
    report["_test_rows"] = rows
    return report


def _settings(run_dir: Path, report: dict, cache_root, rounds: dict,
              smiles_column: str | None) -> TrainConfig:
    """The run's own settings (its settings.json, else report.json's), on the model's rounds
    and, if given, another cache or SMILES column."""
    from molpipe.training.run_dir import SETTINGS
    from molpipe.training.settings import LEGACY

    path = run_dir / SETTINGS
    try:
        values = (json.loads(path.read_text(encoding="utf-8")) if path.is_file()
                  else report.get("config") or {"data": report["dataset"]})
        known = {f.name for f in fields(TrainConfig)}
        values = {k: v for k, v in {**LEGACY, **values}.items() if k in known}
        values.update(rounds, **({"cache_root": str(cache_root)} if cache_root else {}),
                      **({"smiles_column": smiles_column} if smiles_column else {}))
        return TrainConfig.from_dict(values, str(path))
    except (ValueError, TypeError) as err:
        raise ModelError(f"{run_dir}: unreadable run settings ({err})") from None


def _missing_targets(data: str, targets: list[str], smiles_column: str | None) -> list[str]:
    """The model's targets that the file (or bundled data set) ``data`` has no column for."""
    from molpipe.data.readers import open_table
    from molpipe.data.registry import resolve_source

    path, entry = resolve_source(data)
    smiles_column = smiles_column or (entry.smiles_column if entry else None)
    open_table(path, smiles_column=smiles_column, targets=())      # the file itself is sound
    missing = []
    for t in targets:
        try:
            open_table(path, smiles_column=smiles_column, targets=[t])
        except DataError:
            missing.append(t)
    return missing


#: store rows grouped by plan (and packed, ``size`` a time) at once
BLOCK = 16_384


def predict_rows(predictor: Predictor, store, rows: np.ndarray, size: int,
                 with_std: bool = False, n_jobs: int = 1, block: int = BLOCK):
    """Predictions (len(rows), n_targets) of store rows, packed ``size`` per instance by plan
    (``store.pack``) within blocks of ``block`` rows, so that no more than a block's plan
    groups and ``2 n_jobs`` instances are held at once, and the store's pages read are
    released after each block; on ``n_jobs`` threads (the forward's kernels release the
    GIL). ``with_std``: (predictions, σ or None)."""
    from molpipe.data.instance import group_by_plan

    rows = np.asarray(rows, np.int64)
    P = np.full((len(rows), len(predictor.targets)), np.nan)
    S = np.full_like(P, np.nan) if predictor.has_std else None

    def groups():
        for b0 in range(0, len(rows), block):
            if b0:
                release_pages(store)
            r = rows[b0:b0 + block]
            for g in group_by_plan(store.n_rounds[r], store.has_rings[r], size, None):
                yield g + b0

    def predicted(g):
        return g, predictor.predict_instance(store.pack(rows[g]))

    def put(g, out):
        P[g] = out[0]
        if S is not None:
            S[g] = out[1]

    if n_jobs <= 1:
        for g in groups():
            put(*predicted(g))
    else:
        from concurrent.futures import ThreadPoolExecutor

        from molpipe.inference.files import in_order

        with ThreadPoolExecutor(n_jobs) as pool:
            for out in in_order(pool, predicted, groups(), 2 * n_jobs):
                put(*out)
    return (P, S) if with_std else P


def run_store(run_dir: Path, predictor: Predictor, cache_root=None, smiles_column=None,
              progress=None):
    """(store, molecules per instance) of the data a run was trained on, featurized for
    ``predictor``; the store's rows are the ones split.json names."""
    from molpipe.training.session import open_store

    report = _report(run_dir)
    rounds = {"min_rounds": predictor.min_rounds, "max_rounds": predictor.max_rounds}
    settings = _settings(run_dir, report, cache_root, rounds, smiles_column)
    size = settings.molecules_per_instance or int(report.get("molecules_per_instance") or 64)
    return open_store(settings, predictor.targets, progress), size


def evaluate(model: "str | Path | Predictor", data: str | None = None, *,
             smiles_column: str | None = None, cache_root: str | Path | None = None,
             progress=None, n_jobs: int = 2) -> dict:
    """Metrics of a model on ``data`` (a labelled CSV/SDF, a bundled name or a graph store),
    or without ``data`` on its run's own test split (as ``report.json`` and ``split.json`` say).
    The molecules are packed from the store in blocks and predicted on ``n_jobs`` threads;
    memory holds the predictions ((rows, n_targets) floats), not the graphs.

    Returns
    -------
    dict : data, split ("test" or None), task, targets, rows (evaluated molecules), rejected
        (rows of the file that could not be featurized), metrics {target: {rmse, mae, r2, n} or
        {auc, prc_auc, accuracy, positives, n}}, summary (their mean over targets:
        ``molpipe.training.metrics.summary``).
    """
    from molpipe.kernels import one_blas_thread
    from molpipe.training.metrics import metrics_table, summary
    from molpipe.training.session import open_store

    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    targets = predictor.targets
    rounds = {"min_rounds": predictor.min_rounds, "max_rounds": predictor.max_rounds}
    size = 64
    if data is None:
        run_dir = predictor.run_dir
        report = _report(run_dir)
        store, size = run_store(run_dir, predictor, cache_root, smiles_column, progress)
        data = report["dataset"]
        rows = report["_test_rows"]
        if rows.size and (rows.min() < 0 or rows.max() >= len(store)):
            raise DataError(f"{run_dir}/split.json: test rows beyond the {len(store)} molecules "
                            f"of {data}; has the data file changed since training?")
        split = "test"
    else:
        if not Path(data).is_dir():
            missing = _missing_targets(data, targets, smiles_column)
            if missing:
                raise DataError(f"{data}: no column for the model's target(s) "
                                f"{', '.join(missing)}; the model predicts {', '.join(targets)}")
        store = open_store(TrainConfig(data=str(data), smiles_column=smiles_column,
                                       cache_root=cache_root and str(cache_root), **rounds),
                           targets, progress)
        rows = np.arange(len(store), dtype=np.int64)
        split = None
    with one_blas_thread():
        P, S = predict_rows(predictor, store, rows, size, with_std=True, n_jobs=n_jobs)
    Y = store.targets[rows]
    metrics = metrics_table(predictor.task, targets, Y, P)
    out = {"data": str(data), "split": split, "task": predictor.task, "targets": targets,
           "rows": int(len(rows)),
           "rejected": None if split else int(store.meta.get("rows_rejected", 0)),
           "metrics": metrics, "summary": summary(predictor.task, metrics)}
    if S is not None and predictor.task == "regression":
        from molpipe.training.calibration import calibration_table

        out["calibration"] = calibration_table(targets, Y, P, S)
    return out
