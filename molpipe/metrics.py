"""Per-target metrics: RMSE, MAE, R² for regression; ROC-AUC for classification."""

from __future__ import annotations

import numpy as np


def regression_metrics(y_true: np.ndarray, y_pred: np.ndarray) -> dict[str, float]:
    """RMSE, MAE and R² over the rows where ``y_true`` is finite (1-D arrays)."""
    ok = np.isfinite(y_true) & np.isfinite(y_pred)
    t, p = y_true[ok].astype(np.float64), y_pred[ok].astype(np.float64)
    if t.size == 0:
        return {"rmse": float("nan"), "mae": float("nan"), "r2": float("nan"), "n": 0}
    err = p - t
    ss_tot = float(((t - t.mean()) ** 2).sum())
    r2 = 1.0 - float((err**2).sum()) / ss_tot if ss_tot > 0 else float("nan")
    return {
        "rmse": float(np.sqrt((err**2).mean())),
        "mae": float(np.abs(err).mean()),
        "r2": r2,
        "n": int(t.size),
    }


def roc_auc(y_true: np.ndarray, score: np.ndarray) -> float:
    """Area under the ROC curve (Mann–Whitney U with mid-ranks for ties); NaN if one class."""
    ok = np.isfinite(y_true) & np.isfinite(score)
    t, s = y_true[ok] > 0.5, score[ok]
    n_pos, n_neg = int(t.sum()), int((~t).sum())
    if n_pos == 0 or n_neg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ranks = np.empty(s.size, dtype=np.float64)
    sorted_s = s[order]
    # mid-ranks: every run of equal scores gets the mean of its 1-based positions
    starts = np.flatnonzero(np.r_[True, sorted_s[1:] != sorted_s[:-1]])
    ends = np.r_[starts[1:], s.size]
    for a, b in zip(starts, ends):
        ranks[order[a:b]] = (a + b + 1) / 2.0
    return float((ranks[t].sum() - n_pos * (n_pos + 1) / 2.0) / (n_pos * n_neg))


def classification_metrics(y_true: np.ndarray, y_prob: np.ndarray) -> dict[str, float]:
    """ROC-AUC and accuracy at 0.5 over the rows where ``y_true`` is finite."""
    ok = np.isfinite(y_true)
    acc = float(((y_prob[ok] > 0.5) == (y_true[ok] > 0.5)).mean()) if ok.any() else float("nan")
    return {"auc": roc_auc(y_true, y_prob), "accuracy": acc, "n": int(ok.sum())}


def metrics_table(task: str, names: list[str], Y: np.ndarray, P: np.ndarray) -> dict:
    """{target: metrics} for every column of ``Y`` (true) and ``P`` (predicted)."""
    fn = regression_metrics if task == "regression" else classification_metrics
    return {name: fn(Y[:, j], P[:, j]) for j, name in enumerate(names)}
