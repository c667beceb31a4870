"""plots: a run's PNGs are real images of the promised size; timelines read every trace form."""

import struct

import numpy as np
import pytest

from molpipe.measure.canvas import SIZE
from molpipe.measure.plots import plot_parity, plot_roc, plot_run
from molpipe.measure.timeline import _as_trace, plot_timelines
from tests.test_predict import trained_run


def png_size(path):
    """(width, height) from the PNG signature and IHDR chunk."""
    data = path.read_bytes()
    assert data[:8] == b"\x89PNG\r\n\x1a\n" and data[12:16] == b"IHDR", path
    return struct.unpack(">II", data[16:24])


def drawn_fraction(path):
    """Fraction of pixels that are not (near) white: 0 for a blank canvas."""
    from matplotlib.image import imread

    img = imread(path)[..., :3]
    return float((img.min(axis=2) < 0.9).mean())


def toy_trace(n_keys, seconds_per_stage, workers=("embed", "propagate", "readout")):
    """A sequential forward/backward timeline over ``workers`` for ``n_keys`` instances."""
    entries, t = [], 0.0
    for key in range(n_keys):
        for direction, order in (("forward", range(len(workers))),
                                 ("backward", reversed(range(len(workers))))):
            for w in order:
                entries.append((w, t, t + seconds_per_stage, key, workers[w], 0, direction))
                t += seconds_per_stage
    return entries, {i: name for i, name in enumerate(workers)}


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_plot_run_writes_every_chart(run_dir):
    paths = plot_run(run_dir)
    assert sorted(p.name for p in paths) == ["learning_curves.png", "parity.png",
                                             "timeline.png", "utilization.png"]
    for p in paths:
        assert p.parent == run_dir / "plots"
        assert png_size(p) == SIZE
        assert drawn_fraction(p) > 0.01, p


def test_plot_run_skips_what_is_missing(run_dir, tmp_path):
    import shutil

    part = tmp_path / "run"
    part.mkdir()
    shutil.copy(run_dir / "metrics.csv", part)
    assert [p.name for p in plot_run(part)] == ["learning_curves.png"]
    assert plot_run(tmp_path / "empty") == []


def test_timelines_share_one_time_scale(tmp_path):
    fast, slow = toy_trace(4, 0.01), toy_trace(4, 0.03)
    path = plot_timelines({"async": fast, "sync": {"entries": slow[0], "workers": slow[1]}},
                          tmp_path / "t.png")
    assert png_size(path) == SIZE
    from matplotlib.figure import Figure  # noqa: F401  (matplotlib importable without pyplot)
    img = __import__("matplotlib.image", fromlist=["imread"]).imread(path)[..., :3]
    # the fast run's bars end a third of the way across: its panel's right part stays white
    h, w = img.shape[:2]
    top, bottom = img[int(0.2 * h):int(0.4 * h)], img[int(0.65 * h):int(0.85 * h)]
    coloured = lambda part: (np.abs(part - part.mean(axis=2, keepdims=True)).sum(axis=2) > 0.1)
    assert coloured(bottom[:, int(0.7 * w):int(0.9 * w)]).mean() > 0.05
    assert coloured(top[:, int(0.7 * w):int(0.9 * w)]).mean() < 0.01
    assert coloured(top[:, int(0.1 * w):int(0.3 * w)]).mean() > 0.05


def test_as_trace_forms():
    entries, workers = toy_trace(2, 0.01)
    for form in (entries, (entries, workers), {"entries": [list(e) for e in entries],
                                               "workers": {str(k): v for k, v in workers.items()}}):
        cols, names = _as_trace(form)
        assert len(cols["t_start"]) == len(entries)
        assert set(names) == {0, 1, 2}
    assert _as_trace(entries)[1][1] == "worker 1"
    assert _as_trace((entries, workers))[1][1] == "propagate"
    assert _as_trace((entries, list(workers.values())))[1] == workers


def test_parity_several_targets(tmp_path):
    rng = np.random.default_rng(0)
    Y = rng.normal(size=(50, 4))
    Y[3, 1] = np.nan
    path = plot_parity(Y, Y + 0.1 * rng.normal(size=Y.shape), ["a", "b", "c", "d"],
                       tmp_path / "p.png")
    assert png_size(path) == SIZE and drawn_fraction(path) > 0.01


def fake_classification_run(root, n=60, with_report_targets=True):
    """A fake classification run directory: report.json and test_predictions.csv only.

    Task ``a`` has both classes (some labels empty, some "nan"), ``b`` both, ``c`` one class.
    """
    import csv
    import json

    rng = np.random.default_rng(0)
    root.mkdir(parents=True, exist_ok=True)
    report = {"dataset": "toy", "task": "classification", "schedule": "async"}
    if with_report_targets:
        report["targets"] = ["a", "b", "c"]
    (root / "report.json").write_text(json.dumps(report))
    with open(root / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "smiles", "a", "b", "c", "pred_a", "pred_b", "pred_c"])
        for i in range(n):
            a, b = int(rng.random() < 0.4), int(rng.random() < 0.5)
            label_a = "" if i % 7 == 0 else ("nan" if i % 11 == 0 else f"{a:.1f}")
            w.writerow([i + 1, "C" * (i % 5 + 1), label_a, b, 0.0,
                        np.clip(0.3 * a + 0.7 * rng.random(), 0, 1), rng.random(), rng.random()])
    return root


@pytest.mark.parametrize("with_report_targets", [True, False])
def test_plot_run_classification_draws_roc(tmp_path, with_report_targets):
    run = fake_classification_run(tmp_path / "run", with_report_targets=with_report_targets)
    paths = plot_run(run)
    assert [p.name for p in paths] == ["roc.png", "pr.png", "confusion.png"]
    assert not (run / "plots" / "parity.png").exists()
    for path in paths:
        assert png_size(path) == SIZE and drawn_fraction(path) > 0.01, path


def test_roc_draws_at_most_max_tasks(tmp_path):
    from matplotlib.image import imread

    rng = np.random.default_rng(1)
    Y = (rng.random((40, 20)) < 0.5).astype(float)
    P = rng.random((40, 20))
    a = plot_roc(Y, P, [f"t{j}" for j in range(20)], tmp_path / "a.png", max_tasks=12)
    b = plot_roc(Y[:, :12], P[:, :12], [f"t{j}" for j in range(12)], tmp_path / "b.png")
    assert png_size(a) == SIZE
    diff = np.abs(imread(a)[..., :3] - imread(b)[..., :3]).max(axis=2) > 0.1
    assert 0 < diff.mean() < 0.01          # the same 12 curves; only the legend's note differs


def test_pr_curve_and_confusion_agree_with_the_metrics():
    from molpipe.training.metrics import average_precision, confusion, pr_curve

    rng = np.random.default_rng(3)
    y = (rng.random(200) < 0.3).astype(float)
    y[::17] = np.nan
    p = np.clip(0.4 * np.nan_to_num(y) + 0.6 * rng.random(200), 0, 1)
    recall, precision = pr_curve(y, p)
    assert np.isclose(np.sum(np.diff(np.r_[0.0, recall]) * precision), average_precision(y, p))
    assert recall[-1] == 1.0 and np.all(np.diff(recall) >= 0)
    m = confusion(y, p)
    known = np.isfinite(y)
    assert m.sum() == known.sum() and m[1].sum() == np.nansum(y)
    assert m[1, 1] == np.sum((y[known] == 1) & (p[known] >= 0.5))


def test_axis_names_do_not_double_words_and_validation_is_in_units():
    from molpipe.measure.plots import _quantity, _val_curve

    assert _quantity("measured_log_solubility") == "log solubility"
    assert _quantity("u0") == "u0"
    rows = [{"val_score": "0.3", "val_logS_rmse": "0.61", "val_logS_mae": "0.4"},
            {"val_score": "0.2", "val_logS_rmse": "0.55", "val_logS_mae": "0.3"}]
    values, label, higher = _val_curve(rows, "regression", {"logS": "log10(mol/L)"})
    assert np.allclose(values, [0.61, 0.55]) and label == "validation RMSE (log10(mol/L))"
    assert not higher
    rows = [{"val_score": "-0.8", "val_a_auc": "0.8", "val_a_prc_auc": "0.1", "val_b_auc": "0.6"}]
    values, label, higher = _val_curve(rows, "classification", {})
    assert np.allclose(values, [0.7]) and label == "validation ROC-AUC (mean of tasks)" and higher
    values, label, _ = _val_curve([{"val_score": "-0.8", "val_a_auc": "0.8",
                                    "val_a_prc_auc": "0.1"}], "classification", {})
    assert np.allclose(values, [0.8]) and label == "validation ROC-AUC"
