"""molpipe hpopt: trials written as they finish, the best one's settings trainable again, trials
pruned on their validation curves, a failing trial recorded, and the install message without
Optuna."""

import csv
import json
import sys
import threading

import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.measure import hpopt as hp
from molpipe.training.settings import TrainConfig

#: a tiny search: 60 ESOL molecules, hidden 16
BASE = TrainConfig(data="esol", limit=60, epochs=2, hidden=16, seed=3)
SPACE = (hp.Param("hidden", "int", 16, 16, 16), hp.Param("max_rounds", "int", 2, 4, 1),
         hp.Param("lr", "log", 1e-4, 1e-2), hp.Param("dropout", "float", 0.0, 0.4, 0.05),
         hp.Param("aggregation", "choice", choices=("mean", "sum", "mean+norm")))


def read_trials(out):
    with open(out / hp.TRIALS_CSV, encoding="utf-8") as f:
        return list(csv.DictReader(f))


def test_search_writes_every_trial_and_the_best_trials_settings(tmp_path):
    pytest.importorskip("optuna")
    events = []
    summary = hp.hpopt(BASE, tmp_path, n_trials=3, space=SPACE,
                       progress=lambda event, **kw: events.append(event))
    rows = read_trials(tmp_path)
    assert [r["number"] for r in rows] == ["0", "1", "2"]
    assert {r["state"] for r in rows} == {"complete"}
    assert [r["epochs"] for r in rows] == ["2", "2", "2"]
    # the first trial is the base settings' own point (hidden, lr, dropout lie in the space)
    assert rows[0]["lr"] == "0.001" and rows[0]["dropout"] == "0.0"
    assert len({(r["max_rounds"], r["lr"], r["aggregation"]) for r in rows}) == 3
    errors = [float(r["best_val_error"]) for r in rows]
    best = rows[errors.index(min(errors))]
    assert summary["best"]["number"] == int(best["number"])
    loaded = TrainConfig.from_file(tmp_path / hp.BEST_TOML)
    assert loaded.max_rounds == int(best["max_rounds"]) and loaded.lr == float(best["lr"])
    assert loaded.aggregation == best["aggregation"] and loaded.dropout == float(best["dropout"])
    assert (loaded.limit, loaded.seed, loaded.epochs) == (60, 3, 2)      # the base's own
    # the best trial's run directory holds that trial's model
    model = json.loads((tmp_path / "trials" / f"trial-{int(best['number']):03d}" / "model"
                        / "config.json").read_text())
    assert model["network"]["aggregation"] == best["aggregation"]
    assert model["max_rounds"] == int(best["max_rounds"])
    doc = json.loads((tmp_path / hp.SUMMARY_JSON).read_text())
    assert doc["states"] == {"complete": 3, "pruned": 0, "failed": 0, "interrupted": 0}
    assert doc["metric"] == "validation RMSE" and doc["best"]["number"] == int(best["number"])
    assert events.count("trial") == 3 and events.count("epoch") == 6


def test_a_trial_the_pruner_stops_ends_after_its_first_epoch_and_leaves_nothing(tmp_path):
    optuna = pytest.importorskip("optuna")

    class AfterFirstEpoch(optuna.pruners.BasePruner):
        def prune(self, study, trial):
            return trial.last_step is not None and trial.last_step >= 1

    threads = threading.active_count()
    summary = hp.hpopt(TrainConfig(**{**BASE.to_dict(), "epochs": 4}), tmp_path, n_trials=2,
                       space=SPACE, pruner=AfterFirstEpoch())
    rows = read_trials(tmp_path)
    assert [r["state"] for r in rows] == ["pruned", "pruned"]
    assert [r["epochs"] for r in rows] == ["1", "1"]                   # of 4
    assert all(r["best_val_error"] for r in rows)
    assert not any((tmp_path / "trials").iterdir())                   # run dirs removed
    assert threading.active_count() == threads                        # workers joined
    assert summary["best"] is None and summary["states"]["pruned"] == 2
    assert not (tmp_path / hp.BEST_TOML).exists()


def test_a_failing_trial_is_recorded_with_its_reason_and_the_search_goes_on(tmp_path, monkeypatch):
    pytest.importorskip("optuna")
    calls, real = [], hp.train

    def flaky(config, out_dir, progress=None):
        calls.append(config)
        if len(calls) == 2:
            raise RuntimeError("the disk is on fire")
        return real(config, out_dir, progress=progress)

    monkeypatch.setattr(hp, "train", flaky)
    summary = hp.hpopt(BASE, tmp_path, n_trials=3, space=SPACE)
    rows = read_trials(tmp_path)
    assert [r["state"] for r in rows] == ["complete", "failed", "complete"]
    assert rows[1]["error"] == "RuntimeError: the disk is on fire"
    assert summary["states"]["failed"] == 1 and summary["best"]["number"] in (0, 2)


def test_hpopt_without_optuna_says_how_to_install_it(monkeypatch):
    monkeypatch.setitem(sys.modules, "optuna", None)                  # import optuna fails
    result = CliRunner().invoke(app, ["hpopt", "esol", "--trials", "2"])
    assert result.exit_code != 0
    assert 'pip install "molpipe[search]"' in result.output


def test_hpopt_command_prints_the_trials_and_writes_its_directory(tmp_path):
    pytest.importorskip("optuna")
    base = tmp_path / "base.toml"
    base.write_text("limit = 60\nhidden = 16\n")
    out = tmp_path / "search"
    result = CliRunner().invoke(app, ["hpopt", "esol", "--trials", "2", "--epochs", "1",
                                      "--config", str(base), "--out", str(out), "--seed", "1"])
    assert result.exit_code == 0, result.output
    assert "trials (validation RMSE" in result.output and "best: trial" in result.output
    rows = read_trials(out)
    assert len(rows) == 2 and rows[0]["state"] == "complete"
    assert TrainConfig.from_file(out / hp.BEST_TOML).seed == 1
    bad = CliRunner().invoke(app, ["hpopt", "esol", "--trials", "0", "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--trials" in bad.output


def test_no_trial_starts_after_the_timeout(tmp_path):
    pytest.importorskip("optuna")
    summary = hp.hpopt(BASE, tmp_path, n_trials=5, timeout=1e-3, space=SPACE)
    assert summary["trials"] == 1 and len(read_trials(tmp_path)) == 1


def test_a_split_without_validation_stops_the_search_at_its_first_trial(tmp_path):
    pytest.importorskip("optuna")
    split = tmp_path / "split.json"
    split.write_text(json.dumps({"train": list(range(40)), "val": [], "test": list(range(40, 60))}))
    base = tmp_path / "base.toml"
    base.write_text("limit = 60\nhidden = 16\n")
    out = tmp_path / "search"
    result = CliRunner().invoke(app, ["hpopt", "esol", "--trials", "3", "--epochs", "1",
                                      "--split", str(split), "--config", str(base),
                                      "--out", str(out)])
    assert result.exit_code == 1
    assert "no validation molecules" in result.output
    assert [r["state"] for r in read_trials(out)] == ["failed"]
    with pytest.raises(hp.HpoptError, match="holds a search"):
        hp.hpopt(BASE, out, n_trials=1)
