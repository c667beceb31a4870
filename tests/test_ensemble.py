"""Ensembles (train --ensemble K) and the calibration of σ (molpipe.training.calibration)."""

import csv
import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.inference.ensemble import EnsemblePredictor, assemble
from molpipe.inference.evaluate import evaluate
from molpipe.inference.predict import Predictor
from molpipe.io.model import ModelError
from molpipe.training.calibration import calibration, curve, spearman, std_scale
from molpipe.training.ensemble import member_configs, train_members
from molpipe.training.settings import SettingsError, TrainConfig

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "CCCCCCCC", "ClC(Cl)Cl"]


# -- calibration metrics -------------------------------------------------------------------

def gaussian_errors(n=20000, seed=0, wrong_by=1.0):
    rng = np.random.default_rng(seed)
    sigma = rng.uniform(0.2, 2.0, n)
    y = rng.normal(0.0, sigma * wrong_by)
    return y, np.zeros(n), sigma


def test_calibrated_gaussian_errors_score_as_calibrated():
    m = calibration(*gaussian_errors())
    assert m["within_68"] == pytest.approx(0.6827, abs=0.01)
    assert m["within_95"] == pytest.approx(0.95, abs=0.005)
    assert m["miscalibration_area"] < 0.01
    assert 0.3 < m["spearman"] < 0.7             # σ ranks the errors, with noise
    expected, observed = curve(*gaussian_errors())
    assert np.abs(observed - expected).max() < 0.02 and observed[-1] == 1.0


def test_overconfident_sigma_is_miscalibrated_and_one_factor_recalibrates_it():
    y, mu, sigma = gaussian_errors(wrong_by=3.0)      # errors 3× what σ says
    raw = calibration(y, mu, sigma)
    assert raw["within_95"] < 0.6 and raw["miscalibration_area"] > 0.2
    (s,) = std_scale(y[:, None], mu[:, None], sigma[:, None])
    assert s == pytest.approx(3.0, rel=0.03)
    fixed = calibration(y, mu, sigma * s)
    assert fixed["miscalibration_area"] < 0.01 and fixed["nll"] < raw["nll"]


def test_spearman_counts_ranks_and_ties():
    a = np.array([1.0, 2.0, 3.0, 4.0, 5.0])
    assert spearman(a, a ** 3) == pytest.approx(1.0)
    assert spearman(a, -a) == pytest.approx(-1.0)
    assert spearman(a, np.array([1.0, 1.0, 2.0, 2.0, 3.0])) == pytest.approx(0.9486833, abs=1e-6)
    assert np.isnan(spearman(a, np.ones(5)))


def test_missing_cells_are_left_out():
    y = np.array([1.0, np.nan, 2.0, 0.5])
    m = calibration(y, np.zeros(4), np.array([1.0, 1.0, np.nan, 1.0]))
    assert m["n"] == 2 and m["within_68"] == 1.0


# -- ensembles -----------------------------------------------------------------------------

def tiny(**kw):
    return TrainConfig(**{"data": "esol", "limit": 120, "epochs": 2, "hidden": 16,
                          "max_rounds": 3, "ensemble": 2, **kw})


@pytest.fixture(scope="module")
def ensemble_dir(tmp_path_factory):
    out = tmp_path_factory.mktemp("ens")
    config = tiny(schedule="reference", recalibrate=True)
    done = train_members(config, out)
    assemble(out, config, done["seconds"], done["jobs"])
    return out


def test_members_share_the_split_and_differ_in_seed():
    configs = member_configs(tiny(seed=7, ensemble=3))
    assert [c.seed for c in configs] == [7, 8, 9]
    assert {c.split_seed for c in configs} == {7} and {c.ensemble for c in configs} == {1}


def test_an_ensemble_predicts_its_members_mean_and_spread(ensemble_dir):
    ens = Predictor.load(ensemble_dir)
    assert isinstance(ens, EnsemblePredictor) and ens.has_std and len(ens.members) == 2
    P, S, errors, _ = ens.predict_all(SMILES)
    members = np.stack([m.predict(SMILES)[0] for m in ens.members])
    np.testing.assert_allclose(P, members.mean(axis=0), rtol=1e-6)
    np.testing.assert_allclose(S, members.std(axis=0) * ens.std_scale, rtol=1e-5)
    assert errors == [""] * len(SMILES) and (S > 0).all()
    split = [json.loads((ensemble_dir / f"member-{i}" / "split.json").read_text())
             for i in range(2)]
    assert split[0] == split[1] == json.loads((ensemble_dir / "split.json").read_text())


def test_the_ensembles_report_scores_its_mean_and_calibration(ensemble_dir):
    report = json.loads((ensemble_dir / "report.json").read_text())
    ens = report["ensemble"]
    assert ens["members"] == ["member-0", "member-1"] and ens["std_scale"][0] > 0
    result = evaluate(ensemble_dir)
    assert result["summary"]["rmse"] == pytest.approx(report["test_summary"]["rmse"], rel=1e-6)
    cal = result["calibration"]["measured_log_solubility"]
    assert cal == pytest.approx(report["calibration"]["test"]["measured_log_solubility"])
    rows = list(csv.DictReader(open(ensemble_dir / "test_predictions.csv")))
    assert len(rows) == report["split_sizes"]["test"]
    assert all(float(r["measured_log_solubility_std"]) > 0 for r in rows)


def test_members_trained_side_by_side_equal_those_trained_one_after_another(tmp_path,
                                                                             ensemble_dir):
    config = tiny(schedule="reference", ensemble_jobs=1)
    train_members(config, tmp_path)
    for i in range(2):
        a = np.load(tmp_path / f"member-{i}" / "model" / "params.npz")
        b = np.load(ensemble_dir / f"member-{i}" / "model" / "params.npz")
        assert all(np.array_equal(a[k], b[k]) for k in a.files)


def test_predict_file_writes_a_std_column_per_target(ensemble_dir, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles\n" + "\n".join(SMILES + ["not-a-molecule"]) + "\n")
    out = tmp_path / "out.csv"
    result = CliRunner().invoke(app, ["predict", "-m", str(ensemble_dir), "-i", str(src),
                                      "-o", str(out), "--jobs", "1"])
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out)))
    assert "measured_log_solubility_std" in rows[0]
    assert all(float(r["measured_log_solubility_std"]) > 0 for r in rows[:-1])
    assert rows[-1]["measured_log_solubility_std"] == "" and rows[-1]["error"]


def test_resume_finishes_the_members_left(tmp_path):
    config = tiny(schedule="reference", ensemble=2)
    train_members(config, tmp_path)
    kept = (tmp_path / "member-0" / "report.json").read_text()
    (tmp_path / "member-1" / "report.json").unlink()          # as if killed before its end
    result = CliRunner().invoke(app, ["train", "--resume", str(tmp_path), "--quiet"])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "member-0" / "report.json").read_text() == kept
    assert (tmp_path / "member-1" / "report.json").is_file()
    assert (tmp_path / "ensemble.json").is_file() and "ensemble" in result.output


def test_bad_ensembles_are_refused(tmp_path, ensemble_dir):
    with pytest.raises(SettingsError, match="--ensemble must be an integer of at least 1"):
        tiny(ensemble=0)
    with pytest.raises(ValueError, match="--backend mpi"):
        train_members(tiny(backend="mpi"), tmp_path)
    bad = tmp_path / "bad"
    bad.mkdir()
    (bad / "ensemble.json").write_text(json.dumps({"members": ["../elsewhere"]}))
    with pytest.raises(ModelError, match="directory names inside"):
        Predictor.load(bad)
    (bad / "ensemble.json").write_text(json.dumps({"members": ["member-0"], "std_scale": [-1]}))
    (bad / "member-0").symlink_to(ensemble_dir / "member-0")
    with pytest.raises(ModelError, match="std_scale"):
        Predictor.load(bad)


def test_an_mve_run_is_recalibrated_in_its_model_and_its_members_add_their_variance(tmp_path):
    from molpipe.inference.calibrate import calibrate_run
    from molpipe.training.train import train

    run = tmp_path / "run"
    train(tiny(loss="mve", ensemble=1, schedule="reference"), run)
    raw = Predictor.load(run)
    P0, S0 = raw.predict_graphs_with_std([raw.featurize(s) for s in SMILES])
    done = calibrate_run(run, recalibrate=True)
    (scale,) = done["std_scale"]
    again = Predictor.load(run)
    P1, S1 = again.predict_graphs_with_std([again.featurize(s) for s in SMILES])
    np.testing.assert_array_equal(P0, P1)
    np.testing.assert_allclose(S1, S0 * scale, rtol=1e-6)
    report = json.loads((run / "report.json").read_text())
    assert report["std_scale"] == [scale] and report["calibration"]["test"]
    assert "measured_log_solubility_std" in (run / "test_predictions.csv").read_text()

    config = tiny(loss="mve", schedule="reference")
    train_members(config, tmp_path / "ens")
    ens = Predictor.load(tmp_path / "ens" / "member-0")       # a member alone
    members = [Predictor.load(tmp_path / "ens" / f"member-{i}") for i in range(2)]
    both = EnsemblePredictor(members, tmp_path / "ens")
    graphs = [ens.featurize(s) for s in SMILES]
    outs = [m.predict_graphs_with_std(graphs) for m in members]
    P, S = both.predict_graphs_with_std(graphs)
    means = np.stack([p for p, _ in outs])
    np.testing.assert_allclose(P, means.mean(axis=0), rtol=1e-6)
    total = means.var(axis=0) + np.mean(np.stack([s for _, s in outs]) ** 2, axis=0)
    np.testing.assert_allclose(S, np.sqrt(total), rtol=1e-5)


def test_recalibrate_needs_a_sigma():
    with pytest.raises(SettingsError, match="--recalibrate scales a predicted σ"):
        tiny(ensemble=1, recalibrate=True)


def test_an_ensemble_explains_its_mean_and_refuses_one_fingerprint_space(ensemble_dir, tmp_path):
    from molpipe.data.errors import DataError
    from molpipe.inference.explain import explain
    from molpipe.inference.fingerprint import fingerprint_file

    ens = Predictor.load(ensemble_dir)
    (e,) = explain(ens, ["CC(=O)Nc1ccc(O)cc1"], method="pooled")
    P, _ = ens.predict(["CC(=O)Nc1ccc(O)cc1"])
    np.testing.assert_allclose(e.value, P[0], rtol=1e-5)
    np.testing.assert_allclose(e.contributions.sum(axis=0) + e.reference, e.value, rtol=1e-9)
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n")
    with pytest.raises(DataError, match="fingerprint one member"):
        fingerprint_file(ensemble_dir, src, tmp_path / "fp.npy")


def test_an_mve_model_explains_its_mean(tmp_path):
    from molpipe.inference.explain import explain
    from molpipe.training.train import train

    train(tiny(loss="mve", ensemble=1, schedule="reference"), tmp_path)
    model = Predictor.load(tmp_path)
    for method in ("gradient", "pooled"):
        (e,) = explain(model, ["c1ccccc1O"], method=method)
        assert e.contributions.shape == (7, 1)
        np.testing.assert_allclose(e.value, model.predict(["c1ccccc1O"])[0][0], rtol=1e-5)
