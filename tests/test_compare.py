"""molpipe compare and train --replicates: rows from report.json, mean ± SD over seeds."""

import json

import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.measure.compare import CompareError, row_of, summarize


def fake_run(path, seed, rmse, speed):
    path.mkdir(parents=True)
    report = {"dataset": "esol", "task": "regression", "split": "random", "seed": seed,
              "epochs": 3, "test_summary": {"rmse": rmse, "mae": rmse / 2, "r2": 0.5},
              "val_summary": {"rmse": rmse + 0.1, "mae": 0.4, "r2": float("nan")},
              "train_molecules_per_second": speed, "wall_seconds": 10.0}
    (path / "report.json").write_text(json.dumps(report))
    return path


def test_summary_is_mean_and_sample_sd_of_the_runs(tmp_path):
    rows = [row_of(fake_run(tmp_path / f"s{i}", i, r, 1000 + 100 * i))
            for i, r in enumerate((0.6, 0.8, 1.0))]
    s = summarize(rows, "reps")
    assert s["runs"] == 3 and s["seeds"] == [0, 1, 2]
    assert s["test_rmse"] == pytest.approx(0.8) and s["test_rmse_sd"] == pytest.approx(0.2)
    assert s["train_molecules_per_second"] == pytest.approx(1100)
    assert s["val_r2"] is None                                   # NaN in every run


def test_compare_prints_runs_and_json_and_names_a_directory_that_is_no_run(tmp_path):
    a, b = fake_run(tmp_path / "a", 0, 0.61, 900), fake_run(tmp_path / "b", 1, 0.75, 1200)
    result = CliRunner().invoke(app, ["compare", str(a), str(b)])
    assert result.exit_code == 0 and "0.61" in result.output and "0.75" in result.output
    out = CliRunner().invoke(app, ["compare", str(a), str(b), "--json"])
    rows = json.loads(out.output)
    assert [r["test_rmse"] for r in rows] == [0.61, 0.75]
    bad = CliRunner().invoke(app, ["compare", str(tmp_path / "nothing")])
    assert bad.exit_code == 2 and "no report.json" in bad.output
    with pytest.raises(CompareError, match="no report.json"):
        row_of(tmp_path)


def test_train_replicates_writes_a_run_per_seed_and_their_summary(tmp_path):
    out = tmp_path / "reps"
    result = CliRunner().invoke(app, ["train", "esol", "--epochs", "1", "--hidden", "32",
                                      "--replicates", "2", "--seed", "5", "--quiet",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    doc = json.loads((out / "summary.json").read_text())
    assert [r["seed"] for r in doc["runs"]] == [5, 6]
    assert (out / "seed-5" / "model" / "config.json").is_file()
    rmse = [r["test_rmse"] for r in doc["runs"]]
    assert doc["summary"]["test_rmse"] == pytest.approx(sum(rmse) / 2)
    assert rmse[0] != rmse[1]                                    # the seeds differ
    listed = CliRunner().invoke(app, ["compare", str(out), "--json"])
    assert json.loads(listed.output)[0]["runs"] == 2
