"""evaluate / predict of a classification model: probabilities, per-task metrics and their mean."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from molpipe.inference.evaluate import evaluate
from molpipe.training.metrics import classification_metrics, summary
from molpipe.inference.predict import Predictor, predict_smiles
from molpipe.inference.files import predict_file

DATASETS = Path(__file__).resolve().parents[1] / "datasets"
_RUN: dict = {}


def classification_run(tmp_path_factory):
    """A tiny classification run (2 epochs, d_h 16) on 80 FreeSolv molecules, built once.

    Its tasks: ``ring`` (1 if the SMILES has a ring-closure digit) and ``never`` (always 0:
    one class, so no AUC).
    """
    if "dir" not in _RUN:
        from molpipe.training.settings import TrainConfig
        from molpipe.training.train import train

        root = tmp_path_factory.mktemp("clfrun")
        with open(DATASETS / "freesolv.csv", newline="", encoding="utf-8") as f:
            smiles = [r["smiles"] for r in csv.DictReader(f)][:80]
        with open(root / "rings.csv", "w", newline="", encoding="utf-8") as f:
            w = csv.writer(f)
            w.writerow(["smiles", "ring", "never"])
            w.writerows([s, int(any(c.isdigit() for c in s)), 0] for s in smiles)
        train(TrainConfig(data=str(root / "rings.csv"), epochs=2, hidden=16, seed=3,
                          cache_root=str(root / "cache")), root / "run")
        _RUN["dir"] = root / "run"
    return _RUN["dir"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return classification_run(tmp_path_factory)


def test_the_run_is_classification(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    assert report["task"] == "classification" and report["targets"] == ["ring", "never"]


def test_predictions_are_probabilities(run_dir, tmp_path):
    predictor = Predictor.load(run_dir)
    assert predictor.task == "classification"
    smiles = ["CCO", "c1ccccc1O", "C1CCCCC1", "CCCCCC"]
    P, errors = predict_smiles(predictor, smiles)
    assert errors == [""] * 4 and P.shape == (4, 2)
    assert np.all((P > 0) & (P < 1))
    src = tmp_path / "in.csv"
    src.write_text("smiles\n" + "\n".join(smiles) + "\n")
    predict_file(predictor, src, tmp_path / "out.csv", n_jobs=1)
    with open(tmp_path / "out.csv", newline="") as f:
        got = [[float(r["pred_ring"]), float(r["pred_never"])] for r in csv.DictReader(f)]
    np.testing.assert_allclose(got, P, rtol=1e-5, atol=1e-6)


def test_evaluate_test_split(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    result = evaluate(run_dir)
    assert result["task"] == "classification" and result["split"] == "test"
    ring, never = result["metrics"]["ring"], result["metrics"]["never"]
    assert set(ring) == {"auc", "prc_auc", "accuracy", "positives", "n"}
    assert 0 < ring["positives"] < ring["n"] and np.isfinite(ring["auc"])
    assert never["positives"] == 0 and np.isnan(never["auc"]) and np.isnan(never["prc_auc"])
    assert result["summary"] == summary("classification", result["metrics"])
    assert result["summary"]["tasks_left_out"] == ["never"]
    assert result["summary"]["tasks_in_mean"] == 1
    assert result["summary"]["auc"] == ring["auc"]
    for m, v in report["test"]["ring"].items():
        assert ring[m] == pytest.approx(v, abs=1e-6), m


def test_evaluate_equals_metrics_of_the_saved_predictions(run_dir):
    """The test split's metrics from test_predictions.csv (probabilities written by train)."""
    with open(run_dir / "test_predictions.csv", newline="") as f:
        rows = list(csv.DictReader(f))
    y = np.array([float(r["ring"]) for r in rows])
    p = np.array([float(r["pred_ring"]) for r in rows])
    assert np.all((p > 0) & (p < 1))
    want = classification_metrics(y, p)
    got = evaluate(run_dir)["metrics"]["ring"]
    for m, v in want.items():
        assert got[m] == pytest.approx(v, abs=1e-5), m


def test_store_rows_predicted_in_blocks_on_threads(run_dir, monkeypatch):
    """Blocks of a few rows on two threads predict what one pass does; every pack holds at
    most ``size`` molecules of one block, and every row is packed exactly once."""
    from molpipe.inference.evaluate import predict_rows, run_store

    predictor = Predictor.load(run_dir)
    store, size = run_store(run_dir, predictor)
    rows = np.arange(len(store), dtype=np.int64)[::-1].copy()        # any order
    whole = predict_rows(predictor, store, rows, size, n_jobs=1, block=len(rows))
    packed = []
    pack = type(store).pack

    def recording(self, r):
        packed.append(np.array(r))
        return pack(self, r)

    monkeypatch.setattr(type(store), "pack", recording)
    blocks = predict_rows(predictor, store, rows, 4, n_jobs=2, block=7)
    np.testing.assert_allclose(blocks, whole, rtol=1e-5, atol=1e-6)
    assert np.isfinite(blocks).all()
    assert sorted(np.concatenate(packed).tolist()) == sorted(rows.tolist())
    position = {r: i for i, r in enumerate(rows.tolist())}
    for r in packed:
        p = [position[x] for x in r.tolist()]
        assert len(r) <= 4 and max(p) // 7 == min(p) // 7          # within one block


def test_evaluate_a_store_equals_its_file(run_dir, tmp_path):
    """``molpipe evaluate --model RUN STORE``: the metrics of the data file it was built from."""
    from molpipe.data.store import build_store

    data = tmp_path / "rings.csv"
    data.write_text("smiles,ring,never\n" + "".join(
        f"{s},{int(any(c.isdigit() for c in s))},0\n"
        for s in ["CCO", "c1ccccc1O", "C1CCCCC1", "CCCCCC", "C1CC", "CC(=O)O", "c1ccncc1"]))
    build_store(data, tmp_path / "store", smiles_column="smiles", targets=["ring", "never"],
                n_jobs=1)
    by_file = evaluate(run_dir, str(data), cache_root=tmp_path / "cache", n_jobs=1)
    by_store = evaluate(run_dir, str(tmp_path / "store"), n_jobs=2)
    assert by_store["rows"] == by_file["rows"] == 6 and by_store["rejected"] == 1
    for m, v in by_file["metrics"]["ring"].items():
        assert by_store["metrics"]["ring"][m] == pytest.approx(v, abs=1e-6), m


def test_store_pages_released_between_blocks(run_dir, monkeypatch):
    from molpipe.inference import evaluate as ev

    predictor = Predictor.load(run_dir)
    store, size = ev.run_store(run_dir, predictor)
    calls = []
    monkeypatch.setattr(ev, "release_pages", lambda s: calls.append(s))
    ev.predict_rows(predictor, store, np.arange(len(store)), size, block=10)
    assert len(calls) == (len(store) - 1) // 10 and all(s is store for s in calls)
