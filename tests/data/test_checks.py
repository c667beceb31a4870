"""Data checks before a run: labels, empty splits, odd targets — errors and warnings."""

import json

import numpy as np
import pytest

from molpipe.data.checks import check_labels, check_split, check_targets, target_warnings
from molpipe.data.errors import DataError
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train


class FakeStore:
    def __init__(self, Y, names, not_numbers=None):
        self.targets = np.asarray(Y, np.float32)
        self.target_names = names
        self.source_row = np.arange(1, len(Y) + 1)
        self.targets_not_numbers = not_numbers or {}


def test_labels_other_than_0_1_name_column_row_value():
    store = FakeStore([[0, 1], [1, np.nan], [1, 2]], ["a", "b"])
    with pytest.raises(DataError, match=r"my\.csv: column 'b', row 3: value 2 is not a class label"):
        check_labels(store, "classification", "my.csv")
    check_labels(store, "regression", "my.csv")                # regression: any number goes
    check_labels(FakeStore([[0, 1], [np.nan, 0]], ["a", "b"]), "classification", "ok.csv")


def test_empty_splits():
    split = {"train": np.arange(4), "val": np.arange(0), "test": np.arange(1)}
    (w,) = check_split(split, 5, "t.csv", asked=True)
    assert "validation split is empty" in w and "last epoch" in w
    with pytest.raises(DataError, match="training split empty"):
        check_split({"train": np.arange(0), "val": np.arange(0), "test": np.arange(1)}, 1, "t.csv",
                    asked=True)
    with pytest.raises(DataError, match="5 usable molecule"):
        check_split(split, 5, "t.csv")


def test_target_warnings():
    store = FakeStore([[1, 0, 2.0], [1, 0, np.nan], [1, 0, 3.0]], ["c", "k", "n"],
                      {"n": {"count": 7, "rows": [2, 5], "values": ["abc", "x"]}})
    rows = np.arange(3)
    reg = target_warnings(store, rows, "regression")
    assert any("'c' is constant" in w and "unit scale" in w for w in reg)
    assert any("'n': 7 cell(s) are not numbers (row 2: 'abc', row 5: 'x' …)" in w for w in reg)
    cls = target_warnings(FakeStore([[1, 0], [1, 1]], ["one", "two"]), np.arange(2), "classification")
    assert cls == ["task 'one' has one class (1) in the training split: its AUC is left out of the mean"]


def write(path, text):
    path.write_text(text)
    return path


def test_tiny_file_is_refused_saying_how_to_train_on_it_anyway(tmp_path):
    data = write(tmp_path / "tiny.csv", "smiles,y\nCCO,1.0\nCCC,2.0\n")
    with pytest.raises(DataError) as err:
        train(TrainConfig(data=str(data), epochs=2, hidden=8, cache_root=str(tmp_path / "c")),
              tmp_path / "run")
    assert str(err.value).startswith(f"{data}: 2 usable molecule(s); a run needs at least 10")
    assert "--split FILE.json" in str(err.value)
    assert not (tmp_path / "run" / "model").exists()


def test_tiny_file_with_a_split_file_trains_and_says_what_it_did(tmp_path, recwarn):
    data = write(tmp_path / "tiny.csv", "smiles,y\nCCO,1.0\nCCC,abc\nCCCC,2.5\nc1ccccc1,3.0\nCCN,1.1\n")
    split = write(tmp_path / "split.json", json.dumps({"train": [0, 1, 2], "val": [], "test": [3]}))
    said = []
    report = train(TrainConfig(data=str(data), targets=["y"], epochs=2, hidden=8, split=str(split),
                               cache_root=str(tmp_path / "cache")), tmp_path / "run",
                   progress=lambda event, **kw: said.append(kw["message"]) if event == "warning" else None)
    assert report["split_sizes"]["val"] == 0 and report["best_epoch"] == 2
    assert any("validation split is empty" in w for w in said)
    assert any("row 2: 'abc'" in w for w in said)
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["warnings"] == said and saved["targets_not_numbers"]["y"]["count"] == 1
    assert (tmp_path / "run" / "model" / "params.npz").exists()
    assert not [w for w in recwarn if issubclass(w.category, RuntimeWarning)]


def test_one_class_task_left_out_of_the_mean(tmp_path):
    rows = ["CCO,1,0", "CCC,1,1", "CCCC,1,0", "c1ccccc1,1,1", "CCN,1,0", "CCCl,1,1", "OCCO,1,0",
            "CC(=O)O,1,1", "CCOC,1,0", "CN,1,1"] * 2
    data = write(tmp_path / "two.csv", "smiles,always,mixed\n" + "\n".join(rows) + "\n")
    split = write(tmp_path / "split.json", json.dumps({"train": list(range(14)), "val": [14, 15, 16],
                                                       "test": [17, 18, 19]}))
    report = train(TrainConfig(data=str(data), epochs=2, hidden=8, task="classification",
                               split=str(split), cache_root=str(tmp_path / "cache")), tmp_path / "run")
    assert any("task 'always' has one class" in w for w in report["warnings"])
    assert report["test_summary"]["tasks_left_out"] == ["always"]
    assert np.isnan(report["test"]["always"]["auc"])
    assert report["test_summary"]["auc"] == report["test"]["mixed"]["auc"]


def test_a_target_without_a_number_is_refused_naming_its_cells(tmp_path):
    from molpipe.data.checks import check_targets
    from molpipe.data.store import open_data

    src = tmp_path / "alltext.csv"
    src.write_text("smiles,solubility\nCCO,high\nc1ccccc1,low\nCCN,\n")
    store = open_data(src, targets=["solubility"], cache_root=tmp_path / "cache")
    with pytest.raises(DataError) as err:
        check_targets(store, str(src))
    assert str(err.value) == (f"{src}: target column 'solubility' holds no numbers: row 1: "
                              "'high', row 2: 'low'; a target holds numbers (or 0/1 labels), "
                              "empty cells where unknown")
    names = tmp_path / "names.csv"
    names.write_text("smiles,name\nCCO,a\nCCC,b\n")
    with pytest.raises(DataError, match="no target column to train on; name one with --target"):
        check_targets(open_data(names, cache_root=tmp_path / "cache"), str(names))


def test_the_run_directory_keeps_rejected_rows_and_cells(tmp_path):
    rows = ["smiles,logS"] + [f"{'C' * (1 + i % 7)}O,{0.1 * i}" for i in range(40)]
    rows[5], rows[9] = "C1CC(,1.0", "CCO,insoluble"             # data rows 5 and 9
    src = tmp_path / "some_bad.csv"
    src.write_text("\n".join(rows) + "\n")
    out = tmp_path / "run"
    report = train(TrainConfig(data=str(src), epochs=1, hidden=8, schedule="reference",
                               cache_root=str(tmp_path / "cache")), out)
    assert (out / "rejects.csv").read_text().splitlines()[1:] == ["5,C1CC(,unparsable SMILES"]
    assert (out / "rejected_cells.csv").read_text().splitlines() == ["row,target,value",
                                                                     "9,logS,insoluble"]
    said = "\n".join(report["warnings"])
    assert f"1 of 40 rows are not molecules RDKit reads; left out, listed with the reason in " \
           f"{out / 'rejects.csv'}" in said
    assert f"all in {out / 'rejected_cells.csv'}" in said
