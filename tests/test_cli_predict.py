"""CLI predict / evaluate / plot: tables, files, JSON; every bad input is one line, exit 2."""

import csv
import io
import json
import shutil

import pytest

from tests.test_cli import assert_one_line_error, run
from tests.test_evaluate import classification_run
from tests.test_predict import BAD, GOOD, trained_run, write_seeded_csv


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_predict_smiles_table(run_dir):
    result = run("predict", "--model", run_dir, *GOOD[:2], BAD[0][0])
    assert result.exit_code == 0, result.output
    for s in GOOD[:2] + [BAD[0][0], "freesolv", "unparsable SMILES"]:
        assert s in result.stdout
    assert "1 of 3 molecules could not be predicted" in result.stderr


def test_predict_file(run_dir, tmp_path):
    src = tmp_path / "in.csv"
    rows = write_seeded_csv(src)
    out = tmp_path / "out.csv"
    result = run("predict", "-m", run_dir, "--input", src, "--output", out, "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert f"{len(rows)} rows: {len(GOOD)} predicted, {len(BAD)} failed" in result.stderr
    assert "unparsable SMILES" in result.stderr                  # the first errors are shown
    got = list(csv.DictReader(out.open()))
    assert len(got) == len(rows) and sum(bool(r["error"]) for r in got) == len(BAD)


def test_predict_file_json_chunks_without_domain(run_dir, tmp_path):
    src = tmp_path / "in.csv"
    rows = write_seeded_csv(src)
    out = tmp_path / "out.csv"
    result = run("predict", "-m", run_dir, "-i", src, "-o", out, "--jobs", "1",
                 "--chunk-size", "2", "--no-domain", "--json")
    assert result.exit_code == 0, result.output
    summary = json.loads(result.stdout)
    assert (summary["rows"], summary["failed"]) == (len(rows), len(BAD))
    assert summary["out_of_domain"] is None and summary["max_rows_in_flight"] <= 3 * 2
    got = list(csv.DictReader(out.open()))
    assert [r["name"] for r in got] == [r[0] for r in rows]
    assert "in_domain" not in got[0] and "similarity" not in got[0]
    for bad in (["--chunk-size", "0"], ["--json", "-o", "-"]):
        assert run("predict", "-m", run_dir, "-i", src, *bad).exit_code == 2


def test_predict_default_output_name(run_dir, tmp_path):
    src = tmp_path / "mols.csv"
    src.write_text("smiles\nCCO\n")
    result = run("predict", "-m", run_dir, "-i", src)
    assert result.exit_code == 0, result.output
    assert (tmp_path / "mols_predictions.csv").is_file()


def test_predict_to_stdout_keeps_stdout_clean(run_dir, tmp_path):
    src = tmp_path / "in.csv"
    rows = write_seeded_csv(src)
    result = run("predict", "-m", run_dir, "-i", src, "-o", "-")
    assert result.exit_code == 0, result.output
    got = list(csv.DictReader(io.StringIO(result.stdout)))
    assert [r["name"] for r in got] == [r[0] for r in rows]
    assert "rows:" in result.stderr and "rows:" not in result.stdout


def test_evaluate_test_split_and_json(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    result = run("evaluate", "--model", run_dir)
    assert result.exit_code == 0, result.output
    assert "RMSE" in result.stdout and "test split" in result.stdout
    assert f"{report['test']['freesolv']['rmse']:.4f}" in result.stdout
    result = run("evaluate", "--model", run_dir, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["metrics"]["freesolv"]["rmse"] == pytest.approx(report["test"]["freesolv"]["rmse"],
                                                                abs=1e-6)


def test_evaluate_file(run_dir, tmp_path):
    src = tmp_path / "lab.csv"
    src.write_text("smiles,freesolv\nCCO,-5.0\nc1ccccc1O,-6.6\nC1CC,1\n")
    result = run("evaluate", "-m", run_dir, src, "--json")
    assert result.exit_code == 0, result.output
    doc = json.loads(result.stdout)
    assert doc["rows"] == 2 and doc["rejected"] == 1 and doc["metrics"]["freesolv"]["n"] == 2


@pytest.fixture(scope="module")
def clf_dir(tmp_path_factory):
    return classification_run(tmp_path_factory)


def test_evaluate_classification_table(clf_dir):
    result = run("evaluate", "--model", clf_dir)
    assert result.exit_code == 0, result.output
    out = result.stdout
    for text in ("ROC-AUC", "PR-AUC", "accuracy", "n/a (one class)", "mean",
                 "left out of the mean: never", "test split"):
        assert text in out, text
    assert out.count("n/a (one class)") == 2                        # ROC-AUC and PR-AUC
    doc = json.loads(run("evaluate", "--model", clf_dir, "--json").stdout)
    ring = doc["metrics"]["ring"]
    assert f"{ring['auc']:.4f}" in out and f"{ring['prc_auc']:.4f}" in out
    assert doc["metrics"]["never"]["auc"] is None                  # NaN written as null
    assert doc["summary"] == {"auc": ring["auc"], "prc_auc": ring["prc_auc"],
                              "tasks_in_mean": 1, "tasks_left_out": ["never"]}


def test_predict_classification_gives_probabilities(clf_dir):
    result = run("predict", "--model", clf_dir, "CCO", "c1ccccc1")
    assert result.exit_code == 0, result.output
    assert "ring" in result.stdout and "never" in result.stdout
    values = [float(v) for line in result.stdout.splitlines() for v in line.split("│")[2:4]
              if line.startswith("│") and ("CCO" in line or "c1ccccc1" in line)]
    assert len(values) == 4 and all(0 < v < 1 for v in values)


def test_evaluate_regression_json_has_summary(run_dir):
    doc = json.loads(run("evaluate", "--model", run_dir, "--json").stdout)
    assert doc["summary"] == {m: doc["metrics"]["freesolv"][m] for m in ("rmse", "mae", "r2")}
    result = run("evaluate", "--model", run_dir)
    assert "mean" not in result.stdout                             # one target: no mean row


def test_regression_mean_row():
    from rich.console import Console

    from molpipe.cli.display import regression_table
    from molpipe.training.metrics import summary

    metrics = {"x": {"rmse": 1.0, "mae": 0.5, "r2": 0.9, "n": 3},
               "y": {"rmse": 3.0, "mae": 1.5, "r2": 0.7, "n": 3}}
    console = Console(width=120, record=True)
    console.print(regression_table("t", metrics, summary("regression", metrics)))
    mean = [line for line in console.export_text().splitlines() if "mean" in line]
    assert len(mean) == 1 and all(v in mean[0] for v in ("2.0000", "1.0000", "0.8000"))


def test_plot_classification_run(clf_dir):
    result = run("plot", clf_dir)
    assert result.exit_code == 0, result.output
    assert "roc.png" in result.stdout and "parity.png" not in result.stdout
    assert (clf_dir / "plots" / "roc.png").stat().st_size > 1000


def test_plot(run_dir):
    result = run("plot", run_dir)
    assert result.exit_code == 0, result.output
    for name in ("learning_curves.png", "parity.png", "timeline.png", "utilization.png"):
        assert name in result.stdout and (run_dir / "plots" / name).stat().st_size > 1000


def corrupt_copy(run_dir, tmp_path):
    copy = tmp_path / "corrupt"
    shutil.copytree(run_dir / "model", copy / "model")
    params = copy / "model" / "params.npz"
    data = bytearray(params.read_bytes())
    data[len(data) // 2] ^= 0xFF
    params.write_bytes(bytes(data))
    return copy


def test_bad_inputs(run_dir, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles,logS\nCCO,1\n")
    out = tmp_path / "exists.csv"
    out.write_text("precious\n")
    assert_one_line_error(run("predict", "--model", tmp_path, "CCO"), "not a molpipe model")
    assert_one_line_error(run("predict", "--model", tmp_path / "nope", "CCO"), "no such directory")
    assert_one_line_error(run("predict", "--model", corrupt_copy(run_dir, tmp_path), "CCO"),
                          "checksum")
    assert_one_line_error(run("predict", "CCO"), "--model")
    assert_one_line_error(run("predict", "-m", run_dir), "SMILES")
    assert_one_line_error(run("predict", "-m", run_dir, "CCO", "-i", src), "not both")
    assert_one_line_error(run("predict", "-m", run_dir, "-i", tmp_path / "missing.csv"),
                          "no such file")
    assert_one_line_error(run("predict", "-m", run_dir, "-i", src, "-o", out), "--overwrite")
    assert out.read_text() == "precious\n"
    assert_one_line_error(run("predict", "-m", run_dir, "-i", src, "--smiles-column", "mol",
                              "-o", tmp_path / "o.csv"), "no SMILES column 'mol'")
    assert_one_line_error(run("evaluate", "-m", run_dir, src), "no column for the model's target",
                          "freesolv")
    assert_one_line_error(run("evaluate", "-m", run_dir, "esoll"), "unknown data set", "esol")
    assert_one_line_error(run("evaluate", "-m", run_dir, tmp_path / "missing.csv"), "no such file")
    assert_one_line_error(run("evaluate", "-m", corrupt_copy(run_dir, tmp_path / "b")), "checksum")
    assert_one_line_error(run("evaluate", "-m", corrupt_copy(run_dir, tmp_path / "c") / "model"),
                          "checksum")
    bare = tmp_path / "bare"
    shutil.copytree(run_dir / "model", bare / "model")
    assert_one_line_error(run("evaluate", "-m", bare), "no report.json")
    assert_one_line_error(run("plot", tmp_path / "nope"), "no such directory")
    assert_one_line_error(run("plot", src.parent / "b"), "nothing to plot")
