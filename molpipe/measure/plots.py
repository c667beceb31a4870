"""Charts of a run: learning curves, parity or ROC, precision-recall and confusion charts,
and (from ``molpipe.measure.timeline``) its pipeline timeline and utilization.

Drawn with matplotlib's Agg canvas directly (no pyplot, no global backend switch), as PNGs of
``SIZE`` pixels.
"""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np

from molpipe.measure.canvas import figure as _figure, save as _save
from molpipe.measure.timeline import plot_timelines, plot_utilization

ROC_TASKS = 12              # ROC curves drawn at most (the first tasks), to stay readable


def _read_csv(path: Path) -> list[dict[str, str]]:
    with open(path, newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def _floats(rows: list[dict], column: str) -> np.ndarray:
    out = []
    for r in rows:
        try:
            out.append(float(r.get(column) or "nan"))
        except ValueError:
            out.append(float("nan"))
    return np.array(out)


# -- learning curves and parity ----------------------------------------------------------

def _val_curve(metrics: list[dict], task: str, units: dict) -> tuple[np.ndarray, str, bool]:
    """The validation curve in the target's units: (values, axis label, higher is better).

    The mean of the targets' RMSE (regression) or ROC-AUC (classification) from the
    metrics.csv columns ``val_<target>_rmse`` / ``val_<target>_auc``; the standardized
    ``val_score`` when there are none (older runs)."""
    metric = "auc" if task == "classification" else "rmse"
    cols = [c for c in (metrics[0] if metrics else {})
            if c.startswith("val_") and c.endswith(f"_{metric}") and not c.endswith("_prc_auc")]
    if not cols:
        return _floats(metrics, "val_score"), "validation score (lower is better)", False
    table = np.column_stack([_floats(metrics, c) for c in cols])
    known = np.isfinite(table)
    values = np.where(known.any(axis=1),
                      np.where(known, table, 0).sum(axis=1) / np.maximum(known.sum(axis=1), 1),
                      np.nan)
    if metric == "auc":
        return values, f"validation ROC-AUC{' (mean of tasks)' if len(cols) > 1 else ''}", True
    unit = set(units.values()) if units else set()
    unit = f" ({unit.pop()})" if len(unit) == 1 and len(units) >= len(cols) else ""
    return values, f"validation RMSE{unit}{' (mean of targets)' if len(cols) > 1 else ''}", False


def plot_learning_curves(metrics: list[dict], path: str | Path, title: str = "",
                         task: str = "regression", units: dict | None = None) -> Path:
    """Train loss and the validation metric (in the target's units) against epoch and
    against wall time (2 x 2 panels)."""
    fig = _figure()
    epoch, wall = _floats(metrics, "epoch"), _floats(metrics, "wall_seconds")
    loss = _floats(metrics, "train_loss")
    val, val_label, higher = _val_curve(metrics, task, units or {})
    axes = fig.subplots(2, 2, sharey="row")
    for col, (x, xlabel) in enumerate(((epoch, "epoch"), (wall, "wall time (s)"))):
        axes[0, col].plot(x, loss, "o-", color="tab:blue", label="train loss")
        axes[0, col].set_ylabel("train loss (standardized targets)" if task == "regression"
                                else "train loss (cross-entropy)")
        axes[1, col].plot(x, val, "o-", color="tab:orange", label="validation")
        best = None
        if np.isfinite(val).any():
            best = int(np.nanargmax(val)) if higher else int(np.nanargmin(val))
        if best is not None:
            axes[1, col].plot(x[best], val[best], "*", ms=14, color="tab:red", label="best")
        axes[1, col].set_ylabel(val_label)
        for ax in axes[:, col]:
            ax.set_xlabel(xlabel)
            ax.grid(alpha=0.3)
            ax.legend(loc="upper right")
    fig.suptitle(title or "learning curves")
    return _save(fig, path)


def _quantity(target: str) -> str:
    """A target's name for an axis: 'measured_log_solubility' -> 'log solubility'."""
    import re

    name = re.sub(r"^(measured|predicted|experimental|exp)[ _]+", "", target, flags=re.I)
    return name.replace("_", " ") or target


def plot_parity(measured: np.ndarray, predicted: np.ndarray, targets: list[str],
                path: str | Path, title: str = "", units: dict | None = None) -> Path:
    """Predicted against measured, one panel per target, RMSE in each panel's title."""
    fig = _figure()
    measured, predicted = np.atleast_2d(measured), np.atleast_2d(predicted)
    n = len(targets)
    cols = min(n, 3)
    rows = -(-n // cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for j, target in enumerate(targets):
        ax = axes[j]
        y, p = measured[:, j], predicted[:, j]
        ok = np.isfinite(y) & np.isfinite(p)
        rmse = float(np.sqrt(np.mean((p[ok] - y[ok]) ** 2))) if ok.any() else float("nan")
        ax.scatter(y[ok], p[ok], s=12, alpha=0.6, edgecolors="none")
        if ok.any():
            lo, hi = float(min(y[ok].min(), p[ok].min())), float(max(y[ok].max(), p[ok].max()))
            pad = 0.05 * (hi - lo or 1.0)
            ax.plot([lo - pad, hi + pad], [lo - pad, hi + pad], "k--", lw=1, label="y = x")
            ax.set_xlim(lo - pad, hi + pad)
            ax.set_ylim(lo - pad, hi + pad)
            ax.legend(loc="upper left")
        unit = f" ({units[target]})" if units and units.get(target) else ""
        ax.set_xlabel(f"measured {_quantity(target)}{unit}")
        ax.set_ylabel(f"predicted {_quantity(target)}{unit}")
        ax.set_title(f"{target}: RMSE {rmse:.3f}, n = {int(ok.sum())}")
        ax.set_aspect("equal", adjustable="box")
        ax.grid(alpha=0.3)
    for ax in axes[n:]:
        ax.set_visible(False)
    fig.suptitle(title or "parity (test set)")
    return _save(fig, path)


def plot_roc(measured: np.ndarray, predicted: np.ndarray, targets: list[str],
             path: str | Path, title: str = "", max_tasks: int = ROC_TASKS) -> Path:
    """ROC curves of the first ``max_tasks`` tasks on one panel, their ROC-AUC in the legend.

    Tasks whose labelled rows hold one class (or none) are not drawn: the legend names them.
    """
    from matplotlib import colormaps

    from molpipe.training.metrics import roc_auc, roc_curve

    fig = _figure()
    ax = fig.subplots()
    measured, predicted = np.atleast_2d(measured), np.atleast_2d(predicted)
    colors = colormaps["tab20" if min(len(targets), max_tasks) > 10 else "tab10"]
    skipped = []
    for j, target in enumerate(targets[:max_tasks]):
        fpr, tpr = roc_curve(measured[:, j], predicted[:, j])
        if not fpr.size:
            skipped.append(target)
            continue
        n = int(np.isfinite(measured[:, j]).sum())
        ax.plot(fpr, tpr, lw=1.5, color=colors(j % colors.N),      # ties: a diagonal step
                label=f"{_short(target)}: AUC {roc_auc(measured[:, j], predicted[:, j]):.3f}, "
                      f"n = {n}")
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="chance")
    notes = []
    if skipped:
        more = f" and {len(skipped) - 3} more" if len(skipped) > 3 else ""
        notes.append(f"not drawn (one class): {', '.join(map(_short, skipped[:3]))}{more}")
    if len(targets) > max_tasks:
        notes.append(f"{len(targets) - max_tasks} more tasks not drawn")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("false positive rate")
    ax.set_ylabel("true positive rate")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower right", fontsize=8, title="\n".join(notes) or None,
              title_fontsize=8)
    ax.set_title(title or "ROC curves (test set)")
    return _save(fig, path)


def plot_pr(measured: np.ndarray, predicted: np.ndarray, targets: list[str],
            path: str | Path, title: str = "", max_tasks: int = ROC_TASKS) -> Path:
    """Precision-recall curves of the first ``max_tasks`` tasks, PR-AUC and the positive
    share (the curve of a guess) in the legend; one-class tasks are not drawn."""
    from matplotlib import colormaps

    from molpipe.training.metrics import average_precision, pr_curve

    fig = _figure()
    ax = fig.subplots()
    measured, predicted = np.atleast_2d(measured), np.atleast_2d(predicted)
    colors = colormaps["tab20" if min(len(targets), max_tasks) > 10 else "tab10"]
    for j, target in enumerate(targets[:max_tasks]):
        recall, precision = pr_curve(measured[:, j], predicted[:, j])
        if not recall.size:
            continue
        y = measured[:, j][np.isfinite(measured[:, j]) & np.isfinite(predicted[:, j])]
        ax.step(np.r_[0.0, recall], np.r_[precision[0], precision], where="pre", lw=1.5,
                color=colors(j % colors.N),
                label=f"{_short(target)}: PR-AUC {average_precision(measured[:, j], predicted[:, j]):.3f}, "
                      f"positives {100 * y.mean():.1f} %")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1.01)
    ax.set_xlabel("recall (true positives / positives)")
    ax.set_ylabel("precision (true positives / predicted positives)")
    ax.grid(alpha=0.3)
    ax.legend(loc="lower left", fontsize=8)
    ax.set_title(title or "precision-recall curves (test set)")
    return _save(fig, path)


def plot_confusion(measured: np.ndarray, predicted: np.ndarray, targets: list[str],
                   path: str | Path, title: str = "", max_tasks: int = 6) -> Path:
    """Confusion matrices at probability 0.5, one panel per task (the first ``max_tasks``)."""
    from molpipe.training.metrics import confusion

    fig = _figure()
    measured, predicted = np.atleast_2d(measured), np.atleast_2d(predicted)
    shown = targets[:max_tasks]
    cols = min(len(shown), 3)
    rows = -(-len(shown) // cols)
    axes = np.atleast_1d(fig.subplots(rows, cols, squeeze=False).ravel())
    for j, target in enumerate(shown):
        ax = axes[j]
        m = confusion(measured[:, j], predicted[:, j])
        ax.imshow(m, cmap="Blues", vmin=0, vmax=max(int(m.max()), 1))
        for (r, c), v in np.ndenumerate(m):
            ax.text(c, r, str(int(v)), ha="center", va="center",
                    color="white" if v > m.max() / 2 else "black", fontsize=12)
        ax.set_xticks([0, 1], ["0", "1"])
        ax.set_yticks([0, 1], ["0", "1"])
        ax.set_xlabel("predicted (p ≥ 0.5)")
        ax.set_ylabel("measured")
        ax.set_title(_short(target, 28))
    for ax in axes[len(shown):]:
        ax.set_visible(False)
    more = f"; {len(targets) - max_tasks} more tasks not drawn" if len(targets) > max_tasks else ""
    fig.suptitle(title or f"confusion matrices at p = 0.5 (test set){more}")
    return _save(fig, path)


def plot_calibration(measured: np.ndarray, predicted: np.ndarray, std: np.ndarray,
                     targets: list[str], path: str | Path, title: str = "") -> Path:
    """The calibration curve: for each confidence level, the share of test errors inside
    the central interval ``mean ± z σ`` of that probability (the diagonal: calibrated), one
    line per target, its miscalibration area and Spearman ρ(|error|, σ) in the legend."""
    from molpipe.training.calibration import calibration, curve

    fig = _figure()
    ax = fig.add_subplot(1, 1, 1)
    ax.plot([0, 1], [0, 1], "k--", lw=1, label="calibrated")
    for j, target in enumerate(targets[:ROC_TASKS]):
        expected, observed = curve(measured[:, j], predicted[:, j], std[:, j])
        m = calibration(measured[:, j], predicted[:, j], std[:, j])
        ax.plot(expected, observed, lw=2,
                label=f"{_short(target)}: area {m['miscalibration_area']:.3f}, "
                      f"ρ {m['spearman']:.2f}, n = {m['n']}")
    ax.set_xlabel("expected share inside the interval (confidence level)")
    ax.set_ylabel("observed share of test errors inside it")
    ax.set_xlim(0, 1)
    ax.set_ylim(0, 1)
    ax.set_aspect("equal", adjustable="box")
    ax.grid(alpha=0.3)
    ax.legend(loc="upper left")
    fig.suptitle(title or "calibration of σ (test set)")
    return _save(fig, path)


def _short(name: str, width: int = 36) -> str:
    """``name`` cut to ``width`` characters for a legend."""
    return name if len(name) <= width else name[:width - 1] + "…"


def plot_run(run_dir: str | Path) -> list[Path]:
    """Every chart a run directory has data for, as PNGs in ``run_dir/plots/``.

    learning_curves.png (metrics.csv), parity.png (regression; calibration.png too for a
    model with σ) or roc.png, pr.png and confusion.png (classification)
    from test_predictions.csv, timeline.png and utilization.png (trace.json). Returns the
    paths written.
    """
    run_dir = Path(run_dir)
    out = run_dir / "plots"
    report = {}
    if (run_dir / "report.json").is_file():
        report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    name = f"{report.get('dataset', run_dir.name)}, {report.get('schedule', '')}".strip(", ")
    written = []
    if (run_dir / "metrics.csv").is_file():
        metrics = _read_csv(run_dir / "metrics.csv")
        if metrics:
            written.append(plot_learning_curves(metrics, out / "learning_curves.png",
                                                f"learning curves ({name})",
                                                report.get("task", "regression"), _units(report)))
    preds = run_dir / "test_predictions.csv"
    task = report.get("task", "regression")
    if preds.is_file() and task in ("regression", "classification"):
        rows = _read_csv(preds)
        targets = report.get("targets") or [c[5:] for c in (rows[0] if rows else {})
                                            if c.startswith("pred_")]
        if rows and targets:
            Y = np.column_stack([_floats(rows, t) for t in targets])
            P = np.column_stack([_floats(rows, f"pred_{t}") for t in targets])
            if task == "classification":
                written.append(plot_roc(Y, P, targets, out / "roc.png",
                                        f"ROC curves, test set ({name})"))
                written.append(plot_pr(Y, P, targets, out / "pr.png",
                                       f"precision-recall curves, test set ({name})"))
                written.append(plot_confusion(Y, P, targets, out / "confusion.png",
                                              f"confusion matrices at p = 0.5, test set ({name})"))
            else:
                written.append(plot_parity(Y, P, targets, out / "parity.png",
                                           f"parity, test set ({name})", _units(report)))
                if all(f"{t}_std" in rows[0] for t in targets):    # a model with σ
                    S = np.column_stack([_floats(rows, f"{t}_std") for t in targets])
                    written.append(plot_calibration(Y, P, S, targets, out / "calibration.png",
                                                    f"calibration of σ, test set ({name})"))
    if (run_dir / "trace.json").is_file():
        trace = json.loads((run_dir / "trace.json").read_text(encoding="utf-8"))
        if trace.get("entries"):
            written.append(plot_timelines({report.get("schedule", "run"): trace},
                                          out / "timeline.png",
                                          f"pipeline timeline of the last training epoch ({name})"))
        util = trace.get("utilization") or report.get("utilization")
        if util:
            names = trace.get("workers") or {}
            util = {names.get(str(k), str(k)): v for k, v in util.items()}
            written.append(plot_utilization(util, out / "utilization.png",
                                            f"worker utilization, last training epoch ({name})"))
    return written


def _units(report: dict) -> dict:
    """Units of the run's targets (report.json's, else the bundled set's manifest)."""
    if report.get("units"):
        return dict(report["units"])
    try:
        from molpipe.data.registry import get_dataset, is_dataset_name

        data = str(report.get("dataset", ""))
        return dict(get_dataset(data).units) if is_dataset_name(data) else {}
    except Exception:                      # units are a nicety: never fail a plot for them
        return {}
