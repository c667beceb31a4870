"""CLI fingerprint and explain: files written, bad rows and SMILES reported, exit codes,
one-line errors for bad options."""

import csv

import numpy as np
import pytest

from tests.test_cli import assert_one_line_error, run

from .toolkit_model import SMILES, model_dir


@pytest.fixture(scope="module")
def model(tmp_path_factory):
    return model_dir(tmp_path_factory.mktemp("toolkit") / "model", dtype="float32")


def test_fingerprint_npy_and_csv(model, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles\n" + "\n".join(SMILES[:3] + ["C1CC"]) + "\n")
    out = tmp_path / "fp.npy"
    result = run("fingerprint", "-m", model, "-i", src, "-o", out, "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "4 rows: 3 fingerprinted (16 numbers, pooled), 1 failed" in result.stderr
    assert "row 4: unparsable SMILES" in result.stderr and "fp.errors.csv" in result.stderr
    F = np.load(out)
    assert F.shape == (4, 16) and np.isnan(F[3]).all() and not np.isnan(F[:3]).any()
    result = run("fingerprint", "-m", model, "-i", src, "-o", tmp_path / "fp.csv", "--jobs",
                 "1", "--layer", "hidden")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(tmp_path / "fp.csv")))
    assert len(rows) == 4 and "fp_5" in rows[0] and "fp_6" not in rows[0]
    assert rows[3]["error"] == "unparsable SMILES"


def test_fingerprint_bad_options(model, tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n")
    assert_one_line_error(run("fingerprint", "-m", model, "-i", src, "-o", tmp_path / "a.npy",
                              "--layer", "last"), "--layer must be one of pooled, hidden")
    assert_one_line_error(run("fingerprint", "-m", model, "-i", src, "-o", tmp_path / "a.txt"),
                          "must end in .npy or .csv")
    assert_one_line_error(run("fingerprint", "-m", model, "-i", tmp_path / "none.csv", "-o",
                              tmp_path / "a.npy"), "none.csv: no such file")
    assert_one_line_error(run("fingerprint", "-i", src, "-o", tmp_path / "a.npy"), "--model")
    assert "readout's MLP reads" in run("fingerprint", "--help").output


def test_explain_draws_the_good_and_reports_the_bad(model, tmp_path):
    out = tmp_path / "out"
    result = run("explain", "-m", model, "CCO", "C1CC", "c1ccccc1O", "-o", out)
    assert result.exit_code == 0, result.output
    assert "molecule 1 (C1CC): unparsable SMILES" in result.stderr
    assert "2 of 3 molecules drawn" in result.stdout
    for name in ("0_a.png", "0_b.svg", "2_a.svg", "2_b.png", "contributions.csv"):
        assert (out / name).stat().st_size > 0
    assert len(list(csv.DictReader(open(out / "errors.csv")))) == 1


def test_explain_exits_1_when_nothing_is_drawn(model, tmp_path):
    result = run("explain", "-m", model, "C1CC", "-o", tmp_path / "out")
    assert result.exit_code == 1
    assert "0 of 1 molecules drawn" in result.stdout
    assert_one_line_error(run("explain", "-m", model, "CCO", "-o", tmp_path / "o",
                              "--method", "shap"), "--method must be one of gradient, pooled")
