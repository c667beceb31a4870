"""CSV/SDF readers: streaming rows, column discovery, NaN targets, clear DataErrors."""

import math

import numpy as np
import pytest
from rdkit import Chem

from molpipe.chem.featurize import FeaturizationError
from molpipe.data.errors import DataError
from molpipe.data.readers import open_table
from molpipe.data.text import NotNumbers
from molpipe.data.registry import get_dataset

from .conftest import CSV_ROWS


def test_csv_rows(bad_csv):
    table = open_table(bad_csv)
    assert table.smiles_column == "SMILES"                 # found by name, any case
    assert table.target_names == ("y1", "y2")               # numeric columns but the SMILES
    rows = list(table)
    assert [r[0] for r in rows] == list(range(1, len(CSV_ROWS) + 1))
    assert [r[1] for r in rows] == [s for s, _, _ in CSV_ROWS]
    assert rows[0][2].dtype == np.float32 and rows[0][2].tolist() == [1.5, 2.0]
    assert math.isnan(rows[4][2][0]) and rows[4][2][1] == 3.0
    assert math.isnan(rows[6][2][0])


def test_csv_is_lazy(bad_csv):
    it = iter(open_table(bad_csv, targets=["y2"]))
    assert next(it)[2].tolist() == [2.0]


def test_csv_named_columns(bad_csv):
    table = open_table(bad_csv, smiles_column="smiles", targets=["Y2"])
    assert table.smiles_column == "SMILES" and table.target_names == ("y2",)


def test_bundled_default_targets():
    entry = get_dataset("esol")
    assert open_table(entry.path).target_names == ("measured_log_solubility",)


def test_missing_column_lists_available(bad_csv):
    with pytest.raises(DataError, match=r"no target column 'pIC50'.*'name', 'SMILES', 'y1'"):
        open_table(bad_csv, targets=["pIC50"])
    with pytest.raises(DataError, match="no SMILES column 'mol'"):
        open_table(bad_csv, smiles_column="mol")


def test_no_smiles_column(tmp_path):
    path = tmp_path / "a.csv"
    path.write_text("structure,y\nCCO,1\n")
    with pytest.raises(DataError, match="no 'smiles' column.*'structure'.*--smiles-column"):
        open_table(path)


def test_parquet_smiles_column_is_chosen_as_in_a_csv(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    several = "several SMILES columns ('SMILES', ' smiles '); name one with --smiles-column"
    none = "no 'smiles' column; available: 'structure', 'y'; name one with --smiles-column"
    for columns, message in ((("SMILES", " smiles ", "y"), several), (("structure", "y"), none)):
        pq.write_table(pa.table({c: ["CCO"] for c in columns}), path)
        with pytest.raises(DataError) as err:
            open_table(path)
        assert str(err.value) == f"{path}: {message}"
        assert open_table(path, smiles_column="Y").smiles_column == "y"


@pytest.mark.parametrize("name, content, match", [
    ("empty.csv", b"", "empty file"),
    ("data.txt", b"smiles\nC\n", "not a CSV, SMILES, SDF or Parquet file"),
    ("latin1.csv", "smiles,y\nCCO,1\nCC\xe9,2\n".encode("latin-1"), "not UTF-8"),
])
def test_bad_files(tmp_path, name, content, match):
    path = tmp_path / name
    path.write_bytes(content)
    with pytest.raises(DataError, match=match) as err:
        list(open_table(path))
    assert str(path) in str(err.value) and "\n" not in str(err.value)


def test_non_utf8_late_in_file(tmp_path):
    path = tmp_path / "late.csv"
    body = "smiles,y\n" + "CCO,1\n" * 5000 + "CC\xe9,2\n"
    path.write_bytes(body.encode("latin-1"))
    table = open_table(path, targets=["y"])
    with pytest.raises(DataError, match=r"not UTF-8 text \(line 5002, column 3\)"):
        list(table)


def test_missing_file(tmp_path):
    with pytest.raises(DataError, match="no such file"):
        open_table(tmp_path / "nope.csv")


def test_sdf_broken_record_in_middle(sdf_with_broken_record):
    table = open_table(sdf_with_broken_record)
    assert table.smiles_column is None and table.target_names == ("y",)   # "label" not numeric
    rows = list(table)
    assert [r[0] for r in rows] == [1, 2, 3]
    assert isinstance(rows[0][1], Chem.Mol) and Chem.MolToSmiles(rows[0][1]) == "CCO"
    assert isinstance(rows[1][1], FeaturizationError)
    assert rows[1][2].tolist() == [9.0]                       # its targets still parsed
    assert Chem.MolToSmiles(rows[2][1]) == "Oc1ccccc1" and rows[2][2].tolist() == [3.0]


def test_sdf_missing_property(sdf_with_broken_record):
    with pytest.raises(DataError, match="no SDF property 'logP'.*'y', 'label'"):
        open_table(sdf_with_broken_record, targets=["logP"])


NOT_NUMBERS_CSV = ("smiles,y,z\n"
                   "CCO,abc,1\n"           # row 1: y not a number
                   "CCN,,n/a\n"            # row 2: empty and an NA marker: only missing
                   "CCC,1.5,1;5\n"         # row 3: z not a number
                   "CCCl,inf,NaN\n"        # row 4: numbers that are not finite: only missing
                   "CCBr, ? , x \n")       # row 5: "?" is NA; " x " is not a number


def test_not_numbers_are_nan_and_counted(tmp_path):
    path = tmp_path / "t.csv"
    path.write_text(NOT_NUMBERS_CSV)
    table = open_table(path, targets=["y", "z"])      # too few numbers to be found as targets
    seen = NotNumbers(table.target_names)
    rows = list(table.rows(seen))
    assert np.isnan(rows[0][2][0]) and rows[0][2][1] == 1.0          # still NaN, still kept
    assert [np.isnan(r[2]).tolist() for r in rows[1:]] == [[True, True], [False, True],
                                                            [True, True], [True, True]]
    assert seen.as_dict() == {"y": {"count": 1, "rows": [1], "values": ["abc"]},
                              "z": {"count": 2, "rows": [3, 5], "values": ["1;5", "x"]}}
    assert len(list(table)) == 5                                      # plain iteration as before


def test_not_numbers_keeps_the_first_few(tmp_path):
    path = tmp_path / "many.csv"
    long = "q" * 500
    path.write_text("smiles,y\n" + "".join(f"C,bad{i}\n" for i in range(8)) + f"C,{long}\nC,2\n")
    seen = NotNumbers(("y",), keep=5)
    list(open_table(path, targets=["y"]).rows(seen))
    got = seen.as_dict()["y"]
    assert got["count"] == 9 and got["rows"] == [1, 2, 3, 4, 5]
    assert got["values"] == [f"bad{i}" for i in range(5)]
    cut = NotNumbers(("y",), keep=10)
    list(open_table(path, targets=["y"]).rows(cut))
    assert len(cut.values[0][-1]) == NotNumbers.VALUE_CHARS and cut.values[0][-1].endswith("…")
    assert NotNumbers(("y",)).as_dict() == {}


def test_not_numbers_sdf(tmp_path):
    from .conftest import _record

    path = tmp_path / "p.sdf"
    path.write_text(_record("CCO", {"y": "1.0"}) + _record("CCN", {"y": "high"})
                    + _record("CCC", {"other": "1"}) + _record("CCCC", {"y": "n/a"}))
    table = open_table(path, targets=["y"])
    seen = NotNumbers(table.target_names)
    assert [r[2][0] for r in table.rows(seen)][0] == 1.0
    assert seen.as_dict() == {"y": {"count": 1, "rows": [2], "values": ["high"]}}
