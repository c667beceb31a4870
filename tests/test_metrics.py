"""Metrics against hand-computed values and numpy formulas."""

import warnings

import numpy as np
import pytest

from molpipe.training.metrics import (average_precision, classification_metrics, metrics_table,
                             regression_metrics, roc_auc, roc_curve, summary)


def test_regression_metrics_match_formulas_and_skip_nan():
    t = np.array([1.0, 2.0, np.nan, 4.0])
    p = np.array([1.5, 1.0, 7.0, 4.0])
    m = regression_metrics(t, p)
    err = np.array([0.5, -1.0, 0.0])
    assert m["n"] == 3
    assert m["rmse"] == pytest.approx(np.sqrt((err**2).mean()))
    assert m["mae"] == pytest.approx(0.5)
    tt = np.array([1.0, 2.0, 4.0])
    assert m["r2"] == pytest.approx(1 - (err**2).sum() / ((tt - tt.mean()) ** 2).sum())


def test_roc_auc_counts_pairs_and_ties():
    rng = np.random.default_rng(0)
    t = rng.integers(0, 2, 60).astype(float)
    s = np.round(rng.normal(size=60) + t, 1)  # ties on purpose
    pos, neg = s[t == 1], s[t == 0]
    brute = ((pos[:, None] > neg[None, :]).sum() + 0.5 * (pos[:, None] == neg[None, :]).sum())
    assert roc_auc(t, s) == pytest.approx(brute / (pos.size * neg.size))
    assert np.isnan(roc_auc(np.ones(4), np.arange(4.0)))


def test_classification_accuracy():
    m = classification_metrics(np.array([0, 1, 1, np.nan]), np.array([0.2, 0.9, 0.4, 0.5]))
    assert m["accuracy"] == pytest.approx(2 / 3)
    assert m["auc"] == pytest.approx(1.0) and m["prc_auc"] == pytest.approx(1.0)
    assert m["positives"] == 2 and m["n"] == 3
    assert list(m) == ["auc", "prc_auc", "accuracy", "positives", "n"]


def brute_average_precision(t, s):
    """Σ (R_n − R_{n−1}) P_n, predicting ``s >= τ`` for every distinct score τ, highest first."""
    keep = np.isfinite(t) & np.isfinite(s)
    t, s = t[keep] > 0.5, s[keep]
    ap, r_prev = 0.0, 0.0
    for tau in sorted(set(s.tolist()), reverse=True):
        predicted = s >= tau
        tp = int((predicted & t).sum())
        p, r = tp / int(predicted.sum()), tp / int(t.sum())
        ap += (r - r_prev) * p
        r_prev = r
    return ap


def test_average_precision_by_hand():
    # thresholds 0.9: P 1, R 1/3; 0.8: P 1/2, R 1/3; 0.7 (a tie of two positives): P 3/4, R 1;
    # 0.1: P 3/5, R 1. AP = 1/3 * 1 + 0 * 1/2 + 2/3 * 3/4 + 0 = 5/6
    t = np.array([1, 0, 1, 1, 0, np.nan], dtype=float)
    s = np.array([0.9, 0.8, 0.7, 0.7, 0.1, 0.95])
    assert average_precision(t, s) == pytest.approx(5 / 6)
    # a tie of a positive and a negative is one threshold (P 1/2 there), not two
    assert average_precision(np.array([1.0, 0.0]), np.array([0.5, 0.5])) == pytest.approx(0.5)
    assert average_precision(np.array([0.0, 1.0]), np.array([0.2, 0.9])) == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_average_precision_matches_brute_force(seed):
    rng = np.random.default_rng(seed)
    n = 80
    t = rng.integers(0, 2, n).astype(float)
    s = np.round(rng.random(n) + 0.3 * t, 1)                  # many ties on purpose
    t[rng.random(n) < 0.1] = np.nan
    assert average_precision(t, s) == pytest.approx(brute_average_precision(t, s))


def test_one_class_is_nan():
    for t in (np.ones(4), np.zeros(4), np.full(4, np.nan)):
        m = classification_metrics(t, np.arange(4.0) / 4)
        assert np.isnan(m["auc"]) and np.isnan(m["prc_auc"])
        assert roc_curve(t, np.arange(4.0))[0].size == 0
    assert classification_metrics(np.ones(4), np.full(4, 0.9))["positives"] == 4


def test_roc_curve_area_is_roc_auc():
    rng = np.random.default_rng(3)
    t = rng.integers(0, 2, 50).astype(float)
    s = np.round(rng.normal(size=50) + t, 1)
    fpr, tpr = roc_curve(t, s)
    assert (fpr[0], tpr[0], fpr[-1], tpr[-1]) == (0.0, 0.0, 1.0, 1.0)
    assert np.all(np.diff(fpr) >= 0) and np.all(np.diff(tpr) >= 0)
    area = float(np.sum(np.diff(fpr) * (tpr[1:] + tpr[:-1]) / 2))      # trapezoids
    assert area == pytest.approx(roc_auc(t, s))


def test_summary_classification_leaves_one_class_tasks_out():
    Y = np.array([[0, 1, 1], [1, 1, np.nan], [0, 1, np.nan], [1, 1, np.nan]], dtype=float)
    P = np.array([[0.1, 0.9, 0.5], [0.8, 0.2, 0.5], [0.3, 0.6, 0.5], [0.4, 0.7, 0.5]])
    metrics = metrics_table("classification", ["a", "b", "c"], Y, P)
    got = summary("classification", metrics)
    assert got == {"auc": metrics["a"]["auc"], "prc_auc": metrics["a"]["prc_auc"],
                   "tasks_in_mean": 1, "tasks_left_out": ["b", "c"]}
    metrics["d"] = {**metrics["a"], "auc": 0.5, "prc_auc": 0.25}
    got = summary("classification", metrics)
    assert got["auc"] == pytest.approx((metrics["a"]["auc"] + 0.5) / 2)
    assert got["prc_auc"] == pytest.approx((metrics["a"]["prc_auc"] + 0.25) / 2)
    assert got["tasks_in_mean"] == 2


def test_summary_regression_means_and_nan_safety():
    metrics = {"x": {"rmse": 1.0, "mae": 0.5, "r2": 0.9, "n": 3},
               "y": {"rmse": 3.0, "mae": 1.5, "r2": float("nan"), "n": 3}}
    assert summary("regression", metrics) == {"rmse": 2.0, "mae": 1.0, "r2": 0.9}
    with warnings.catch_warnings():
        warnings.simplefilter("error")                       # no RuntimeWarning when all NaN
        nan = metrics_table("regression", ["x"], np.full((3, 1), np.nan), np.zeros((3, 1)))
        assert all(np.isnan(v) for v in summary("regression", nan).values())
        one = metrics_table("classification", ["a"], np.ones((3, 1)), np.zeros((3, 1)))
        got = summary("classification", one)
        assert np.isnan(got["auc"]) and np.isnan(got["prc_auc"])
        assert got["tasks_in_mean"] == 0 and got["tasks_left_out"] == ["a"]
        assert summary("classification", {})["tasks_in_mean"] == 0
