"""An ensemble as one model: ``EnsemblePredictor`` predicts the members' mean and σ, and
``assemble`` writes the ensemble's own run directory files beside its members.

An ensemble directory holds ``ensemble.json`` (its members' directories, relative, and the
σ scale fitted by ``--recalibrate``), the members ``member-i/`` (each a complete run
directory), and report.json, split.json, settings.json, config.toml and
test_predictions.csv of the ensemble, so ``predict``, ``evaluate``, ``compare`` and ``plot``
read it as they read one run.

σ is the spread of the members' predictions (population SD over members), and for members
that predict a σ of their own (``--loss mve``) the root of the mean of their variances plus
that spread's square (the law of total variance); times ``std_scale`` when recalibrated.
"""

from __future__ import annotations

import json
import math
import re
from pathlib import Path

import numpy as np

from molpipe.inference.predict import Predictor
from molpipe.io.model import ModelError

ENSEMBLE = "ensemble.json"
MAX_MEMBERS = 128


class EnsemblePredictor(Predictor):
    """Members that predict the same targets from the same features; their mean is the
    prediction, their spread (and own σ) its uncertainty."""

    def __init__(self, members: list[Predictor], root: Path, std_scale=None):
        first = members[0]
        for m in members[1:]:
            if (m.targets, m.task, m.dims) != (first.targets, first.task, first.dims):
                raise ModelError(f"{root}: member {m.config['_dir']} predicts {m.targets} "
                                 f"({m.task}), member {first.config['_dir']} {first.targets} "
                                 f"({first.task}); an ensemble's members must agree")
        super().__init__(first.network, first.config, first.domain)
        self.members, self.root = members, Path(root)
        n = len(self.targets)
        self.std_scale = np.ones(n) if std_scale is None else np.asarray(std_scale, np.float64)

    @classmethod
    def load(cls, run_dir: str | Path) -> "EnsemblePredictor":
        root = Path(run_dir)
        path = root / ENSEMBLE
        try:
            doc = json.loads(path.read_text(encoding="utf-8"))
        except (OSError, ValueError) as err:
            raise ModelError(f"{path}: unreadable ({err})") from None
        names = doc.get("members") if isinstance(doc, dict) else None
        if (not isinstance(names, list) or not 1 <= len(names) <= MAX_MEMBERS or not all(
                isinstance(n, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}", n)
                for n in names)):
            raise ModelError(f"{path}: 'members' must be a list of 1..{MAX_MEMBERS} "
                             "directory names inside the ensemble's directory")
        scale = doc.get("std_scale")
        members = [Predictor.load(root / n) for n in names]
        if scale is not None and not (
                isinstance(scale, list) and len(scale) == len(members[0].targets)
                and all(isinstance(v, (int, float)) and math.isfinite(v) and v > 0
                        for v in scale)):
            raise ModelError(f"{path}: 'std_scale' must be one positive number per target")
        return cls(members, root, scale)

    @property
    def run_dir(self) -> Path:
        return self.root

    @property
    def has_std(self) -> bool:
        return True

    def predict_instance(self, inst):
        outs = [m.predict_instance(inst) for m in self.members]
        P = np.stack([p for p, _ in outs])
        var = P.var(axis=0)
        if all(s is not None for _, s in outs):
            var = var + np.mean(np.stack([s for _, s in outs]) ** 2, axis=0)
        return P.mean(axis=0), np.sqrt(var) * self.std_scale


def write_ensemble(root: Path, members: list[str], std_scale=None) -> None:
    from molpipe.training.run_dir import replace_json

    replace_json(root / ENSEMBLE, {"format": 1, "members": members, "std_scale": std_scale})


def assemble(root: str | Path, config, seconds: float, jobs: int) -> dict:
    """Combine the finished members of ``root`` into the ensemble (``ensemble.json`` and
    the ensemble's report.json, ...); with ``config.recalibrate`` σ's scale is fitted on the
    validation split. Returns the report."""
    from molpipe.inference.calibrate import split_predictions, write_test_predictions
    from molpipe.training.calibration import calibration_table, std_scale
    from molpipe.training.ensemble import member_dirs
    from molpipe.training.metrics import metrics_table, summary
    from molpipe.training.run_dir import replace_json

    root = Path(root)
    dirs = member_dirs(root, config.ensemble)
    names = [d.name for d in dirs]
    write_ensemble(root, names)                       # members first, scale after the fit
    ens = EnsemblePredictor.load(root)
    reports = [json.loads((d / "report.json").read_text(encoding="utf-8")) for d in dirs]
    (root / "split.json").write_text((dirs[0] / "split.json").read_text(encoding="utf-8"))
    store, rows, out = split_predictions(ens, dirs[0])
    Y = {k: store.targets[r] for k, r in rows.items()}
    task, targets = ens.task, ens.targets
    scale = None
    if config.recalibrate and task == "regression" and len(rows["val"]):
        scale = std_scale(Y["val"], *out["val"])
        write_ensemble(root, names, scale)
        s = np.asarray(scale)
        out = {k: (p, sd * s) for k, (p, sd) in out.items()}
    val_m = metrics_table(task, targets, Y["val"], out["val"][0])
    test_m = metrics_table(task, targets, Y["test"], out["test"][0])
    member_test = [r["test_summary"] for r in reports]
    keys = sorted({k for m in member_test for k, v in m.items() if isinstance(v, (int, float))})
    report = {**{k: reports[0][k] for k in ("dataset", "targets", "task", "split",
                                             "split_sizes", "units", "network",
                                             "molecules_per_instance") if k in reports[0]},
              "seed": config.seed, "schedule": config.schedule,
              "ensemble": {"members": names, "jobs": jobs, "std_scale": scale,
                           "member_test_summary": member_test,
                           "member_mean_test_summary": {
                               k: float(np.mean([m[k] for m in member_test if k in m]))
                               for k in keys}},
              "epochs": max(r["epochs"] for r in reports),
              "wall_seconds": seconds,
              "train_molecules_per_second": sum(r["train_molecules_per_second"]
                                                for r in reports) / len(reports),
              "val": val_m, "test": test_m,
              "val_summary": summary(task, val_m), "test_summary": summary(task, test_m),
              "config": config.to_dict(), "versions": reports[0].get("versions")}
    if task == "regression":
        report["calibration"] = {k: calibration_table(targets, Y[k], *out[k]) for k in out}
    write_test_predictions(root / "test_predictions.csv", store, rows["test"], targets,
                           *out["test"])
    replace_json(root / "report.json", report)       # last: the ensemble is complete
    return report
