"""Metrics against hand-computed values and numpy formulas."""

import numpy as np
import pytest

from molpipe.metrics import classification_metrics, regression_metrics, roc_auc


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
    assert m["auc"] == pytest.approx(1.0)
