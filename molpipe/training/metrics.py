"""Per-target metrics: RMSE, MAE, R² for regression; ROC-AUC, PR-AUC for classification."""

from __future__ import annotations

import math

import numpy as np

NAN = float("nan")


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² over the rows where ``y_true`` is finite (1-D arrays)."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok].astype(np.float64), y_pred[ok].astype(np.float64)
    if t.size == 0:
        return {"rmse": NAN, "mae": NAN, "r2": NAN, "n": 0}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else NAN
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": r2,
        "n": int(t.size),
    }


def _labelled(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(labels as bool, scores) of the rows where both are finite."""
    ok = np.isfinite(y_true) & np.isfinite(score)
    return y_true[ok] > 0.5, score[ok]


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN if one class."""
    t, s = _labelled(y_true, score)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks: every run of equal scores gets the mean of its 1-based positions
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def _counts_by_threshold(t: np.ndarray, s: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """(TP, FP) of predicting ``s >= τ`` at every distinct score τ, highest first (ties one τ)."""
    order = np.argsort(-s, kind="mergesort")
    s, t = s[order], t[order]
    last = np.r_[s[1:] != s[:-1], True]              # the last row of every run of ties
    return np.cumsum(t)[last], np.cumsum(~t)[last]


def roc_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """ROC curve points, from (0, 0) to (1, 1), one per distinct score.

    Parameters
    ----------
    y_true : (n,) labels 0/1, NaN where missing (those rows are left out).
    score : (n,) predicted probabilities or any score (higher means positive).

    Returns
    -------
    fpr, tpr : (k + 1,) false and true positive rates; the trapezoidal area under them equals
        ``roc_auc``. Empty arrays if the labelled rows hold one class.
    """
    t, s = _labelled(y_true, score)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    tp, fp = _counts_by_threshold(t, s)
    return np.r_[0.0, fp / n_neg], np.r_[0.0, tp / n_pos]


def pr_curve(y_true: np.ndarray, score: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Precision-recall points, one per distinct score (highest first); empty if one class.

    Returns (recall, precision), each (k,); ``sum(diff(r_[0, recall]) * precision)`` is
    ``average_precision``.
    """
    t, s = _labelled(y_true, score)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return np.zeros(0), np.zeros(0)
    tp, fp = _counts_by_threshold(t, s)
    return tp / n_pos, tp / (tp + fp)


def confusion(y_true: np.ndarray, prob: np.ndarray, threshold: float = 0.5) -> np.ndarray:
    """(2, 2) counts [[TN, FP], [FN, TP]] of predicting ``prob >= threshold`` on the
    labelled rows."""
    t, s = _labelled(y_true, prob)
    p = s >= threshold
    return np.array([[np.sum(~t & ~p), np.sum(~t & p)], [np.sum(t & ~p), np.sum(t & p)]])


def average_precision(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the precision-recall curve as a step function (PR-AUC); NaN if one class.

    ``AP = Σ_n (R_n − R_{n−1}) P_n`` over the thresholds n at every distinct score (highest
    first, ties one threshold, ``R_0 = 0``), with precision ``P_n`` and recall ``R_n`` of
    predicting ``score >= threshold_n``. Rows where either value is not finite are left out.
    """
    t, s = _labelled(y_true, score)
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return NAN
    tp, fp = _counts_by_threshold(t, s)
    recall = tp / n_pos
    precision = tp / (tp + fp)
    return float(np.sum(np.diff(np.r_[0.0, recall]) * precision))


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """ROC-AUC, PR-AUC, accuracy at 0.5 and the positive count over the labelled rows.

    Parameters
    ----------
    y_true : (n,) labels 0/1, NaN where missing.
    y_prob : (n,) predicted probabilities of the positive class.

    Returns
    -------
    dict : auc (ROC-AUC), prc_auc (average precision), accuracy, positives (labels 1), n
        (labelled rows); auc and prc_auc are NaN when the labelled rows hold one class.
    """
    ok = np.isfinite(y_true)
    acc = float(((y_prob[ok] > 0.5) == (y_true[ok] > 0.5)).mean()) if ok.any() else NAN
    return {"auc": roc_auc(y_true, y_prob), "prc_auc": average_precision(y_true, y_prob),
            "accuracy": acc, "positives": int((y_true[ok] > 0.5).sum()), "n": int(ok.sum())}


def metrics_table(task: str, names: list[str], Y: np.ndarray, P: np.ndarray) -> dict:
    """{target: metrics} for every column of ``Y`` (true) and ``P`` (predicted)."""
    fn = regression_metrics if task == "regression" else classification_metrics
    return {name: fn(Y[:, j], P[:, j]) for j, name in enumerate(names)}


def _mean(values) -> float:
    """Mean of the finite values; NaN (without a warning) if there are none."""
    kept = [float(v) for v in values if v is not None and math.isfinite(v)]
    return sum(kept) / len(kept) if kept else NAN


def summary(task: str, metrics_by_target: dict[str, dict]) -> dict:
    """The mean over targets of ``metrics_table``'s per-target metrics.

    Parameters
    ----------
    task : "regression" or "classification".
    metrics_by_target : {target: metrics} as ``metrics_table`` returns.

    Returns
    -------
    dict : regression: rmse, mae, r2 (each the mean over the targets where it is finite).
        classification: auc and prc_auc (means over the tasks whose ROC-AUC is defined),
        tasks_in_mean (how many), tasks_left_out (the names of the others: one class, or no
        labels). A mean over nothing is NaN.
    """
    ms = list(metrics_by_target.values())
    if task == "regression":
        return {k: _mean(m.get(k) for m in ms) for k in ("rmse", "mae", "r2")}
    kept = {name: m for name, m in metrics_by_target.items()
            if m.get("auc") is not None and math.isfinite(m["auc"])}
    return {"auc": _mean(m["auc"] for m in kept.values()),
            "prc_auc": _mean(m.get("prc_auc") for m in kept.values()),
            "tasks_in_mean": len(kept),
            "tasks_left_out": [name for name in metrics_by_target if name not in kept]}
