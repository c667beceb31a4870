"""A mean-variance head (``molpipe train --loss mve``) trained end to end: the NLL falls,
the model predicts a positive, finite SD, keeps it through its model directory, and
everything that reads a run (metrics, report, predictions) reads the mean."""

import csv
import json

import numpy as np
import pytest

from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, featurize
from molpipe.data.instance import pack
from molpipe.inference.predict import Predictor
from molpipe.io.model import load_model, save_model
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.training.settings import SettingsError, TrainConfig
from molpipe.training.train import train

SMILES = ["CCO", "c1ccccc1O", "CC(=O)O", "ClC(Cl)Cl", "CCCCCC", "OC1CCCCC1", "c1ccncc1"]


@pytest.fixture(scope="module")
def mve_run(tmp_path_factory):
    root = tmp_path_factory.mktemp("mve")
    report = train(TrainConfig(data="freesolv", loss="mve", epochs=6, hidden=16, seed=1,
                               molecules_per_instance=16, lr=3e-3, patience=50,
                               cache_root=str(root / "cache")), root / "run")
    return root / "run", report


def test_the_nll_falls_and_the_report_is_the_means_rmse(mve_run):
    out, report = mve_run
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    loss = [float(r["train_loss"]) for r in rows]
    assert len(loss) == 6 and loss[-1] < loss[0] - 0.1, loss
    assert report["config"]["loss"] == "mve"
    saved = json.loads((out / "report.json").read_text())
    assert saved["network"]["loss"] == "mve"
    test = saved["test"]["freesolv"]
    assert np.isfinite(test["rmse"]) and 0 < test["mae"] <= test["rmse"]
    # the test metrics are those of the saved predictions' means (data units)
    pred = list(csv.DictReader(open(out / "test_predictions.csv")))
    assert len(pred) == len(json.loads((out / "split.json").read_text())["test"])
    from molpipe.measure.plots import plot_run

    assert plot_run(out)                                # the run's charts draw from it too


def test_the_loaded_model_predicts_a_positive_finite_sd(mve_run):
    out, _ = mve_run
    predictor = Predictor.load(out)
    assert predictor.has_std
    graphs = [featurize(s, min_rounds=predictor.min_rounds, max_rounds=predictor.max_rounds)
              for s in SMILES]
    P, S = predictor.predict_graphs_with_std(graphs, batch=3)
    assert P.shape == S.shape == (len(SMILES), 1)
    assert np.isfinite(S).all() and (S > 0).all()
    assert len(np.unique(S.round(6))) > 1               # the SD differs between molecules
    np.testing.assert_allclose(P, predictor.predict_graphs(graphs), rtol=1e-6)
    # each molecule alone: batching changes nothing
    for i, g in enumerate(graphs):
        p, s = predictor.network.predict_with_std(pack([g], np.full((1, 1), np.nan)))
        np.testing.assert_allclose(s[0], S[i], rtol=1e-5)
        np.testing.assert_allclose(p[0], P[i], rtol=1e-5)
    empty = predictor.predict_graphs_with_std([])
    assert empty[0].shape == empty[1].shape == (0, 1)


def _meta(targets):
    return {"atom_dim": ATOM_DIM, "bond_dim": BOND_DIM, "targets": targets,
            "task": "regression", "min_rounds": 2, "max_rounds": 6}


def test_an_mve_model_directory_keeps_its_sd(tmp_path):
    cfg = NetworkConfig(hidden=8, loss="mve", seed=4)
    net = build_network(cfg, ATOM_DIM, BOND_DIM, 2, [1.0, -2.0], [0.5, 3.0])
    net.stages["readout"].params["b_2"][2:] = [0.7, -1.3]
    save_model(tmp_path / "m", cfg, net.state_dict(), _meta(["a", "b"]))
    assert json.loads((tmp_path / "m" / "config.json").read_text())["network"]["loss"] == "mve"
    loaded, _ = load_model(tmp_path / "m")
    assert loaded.config.loss == "mve"
    assert loaded.stages["readout"].params["W_2"].shape == (8, 4)
    inst = pack([featurize(s) for s in SMILES], np.full((len(SMILES), 2), np.nan))
    p0, s0 = net.predict_with_std(inst)
    p1, s1 = loaded.predict_with_std(inst)
    np.testing.assert_array_equal(p1, p0)
    np.testing.assert_array_equal(s1, s0)
    assert (s1 > 0).all()


class _Raw:
    """A network config written as given (an old molpipe's, without the loss field)."""

    def __init__(self, d):
        self.d = d

    def to_dict(self):
        return self.d


def test_a_model_written_before_the_loss_field_loads_as_mse(tmp_path):
    cfg = NetworkConfig(hidden=8, seed=2)
    net = build_network(cfg, ATOM_DIM, BOND_DIM, 1)
    old = {k: v for k, v in cfg.to_dict().items() if k != "loss"}
    save_model(tmp_path / "old", _Raw(old), net.state_dict(), _meta(["y"]))
    assert "loss" not in json.loads((tmp_path / "old" / "config.json").read_text())["network"]
    predictor = Predictor.load(tmp_path / "old")
    assert predictor.network.config.loss == "mse" and not predictor.has_std
    graphs = [featurize(s) for s in SMILES]
    P, S = predictor.predict_graphs_with_std(graphs)
    assert S is None
    np.testing.assert_array_equal(P, predictor.predict_graphs(graphs))
    # an mve model's parameters under a config that says mse (or nothing) are refused
    mve = build_network(NetworkConfig(hidden=8, loss="mve"), ATOM_DIM, BOND_DIM, 1)
    save_model(tmp_path / "bad", _Raw(old), mve.state_dict(), _meta(["y"]))
    from molpipe.io.model import ModelError

    with pytest.raises(ModelError, match="readout.W_2"):
        load_model(tmp_path / "bad")


def test_a_bad_loss_in_config_json_is_refused_naming_the_field(tmp_path):
    from molpipe.io.model import ModelError

    cfg = NetworkConfig(hidden=8)
    net = build_network(cfg, ATOM_DIM, BOND_DIM, 1)
    save_model(tmp_path / "m", _Raw({**cfg.to_dict(), "loss": "gauss"}), net.state_dict(),
               _meta(["y"]))
    with pytest.raises(ModelError, match="'loss' of 'network' must be one of"):
        load_model(tmp_path / "m")


def test_classification_with_mve_is_refused(tmp_path):
    with pytest.raises(SettingsError, match="--loss mve .* regression"):
        TrainConfig(task="classification", loss="mve")
    # a task inferred from 0/1 targets: refused before any training
    rows = "\n".join(f"{s},{i % 2}" for i, s in enumerate(SMILES * 3))
    data = tmp_path / "binary.csv"
    data.write_text("smiles,active\n" + rows + "\n")
    with pytest.raises(ValueError, match="--loss mve .*regression.*classification"):
        train(TrainConfig(data=str(data), loss="mve", epochs=1, hidden=8,
                          cache_root=str(tmp_path / "c")), tmp_path / "run")
    assert not (tmp_path / "run" / "model").exists()
