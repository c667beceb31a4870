"""Hostile files: each is read as the readers.py docstring says, or fails with one clear DataError."""

import csv
import gzip
import math
import os

import numpy as np
import pytest
from rdkit import Chem

from molpipe.chem.featurize import FeaturizationError
from molpipe.data.build import build_store
from molpipe.data.errors import DataError
from molpipe.data.readers import open_table
from molpipe.data.store import GraphStore

GOOD = [("CCO", "1.5"), ("c1ccccc1", "2.5"), ("CC(=O)O", "-0.5"), ("CCN", "3.0")]
CSV_TEXT = "smiles,y\n" + "".join(f"{s},{y}\n" for s, y in GOOD)


def write(tmp_path, name, data):
    path = tmp_path / name
    path.write_bytes(data if isinstance(data, bytes) else data.encode("utf-8"))
    return path


def rows_of(path, **kw):
    return list(open_table(path, **kw))


def rejects_of(store_dir):
    with open(store_dir / "rejects.csv", newline="", encoding="utf-8") as f:
        return list(csv.DictReader(f))


def expect_good(rows):
    assert [r[0] for r in rows] == [1, 2, 3, 4]
    assert [r[1] for r in rows] == [s for s, _ in GOOD]
    assert [float(r[2][0]) for r in rows] == [float(y) for _, y in GOOD]


def test_truncated_last_line_is_rejected_the_rest_kept(tmp_path):
    cut = write(tmp_path, "cut.csv", "smiles,name,y\nCCO,a,1.5\nCCN,b,2.0\nc1ccccc1,c")
    summary = build_store(cut, tmp_path / "s", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_rejected"]) == (3, 2, 1)
    [r] = rejects_of(tmp_path / "s")
    assert r["row"] == "3" and r["reason"] == "row has 2 fields, the header 3"


def test_truncated_inside_quotes_is_rejected(tmp_path):
    cut = write(tmp_path, "cut.csv", 'smiles,y\nCCO,1.5\nCCN,"2.')
    rows = rows_of(cut)
    assert rows[0][1] == "CCO"
    assert isinstance(rows[1][1], FeaturizationError) and "bad CSV row" in str(rows[1][1])
    assert len(rows) == 2


def test_broken_quoting_mid_file_rejects_one_row(tmp_path):
    path = write(tmp_path, "q.csv", 'smiles,y\nCCO,1\n"CC"N,2\nCCC,3\n')
    rows = rows_of(path)
    assert [r[0] for r in rows] == [1, 2, 3] and isinstance(rows[1][1], FeaturizationError)
    assert rows[2][1] == "CCC" and rows[2][2].tolist() == [3.0]


@pytest.mark.parametrize("delimiter", [";", "\t", "|"])
def test_other_delimiter_is_detected(tmp_path, delimiter):
    path = write(tmp_path, "d.csv", CSV_TEXT.replace(",", delimiter))
    table = open_table(path)
    assert table.delimiter == delimiter and table.target_names == ("y",)
    expect_good(list(table))


def test_unknown_delimiter_says_what_was_found(tmp_path):
    path = write(tmp_path, "d.csv", CSV_TEXT.replace(",", ":"))
    with pytest.raises(DataError, match=r"no 'smiles' column; available: 'smiles:y' "
                                        r"\(the header line has no ','"):
        open_table(path)


def test_unquoted_comma_in_a_field_is_a_reject_not_a_shifted_row(tmp_path):
    path = write(tmp_path, "c.csv", "name,smiles,y\nethanol,CCO,1\n1,2-diol,OCCO,2\nx,CCN,3\n")
    rows = rows_of(path)
    assert isinstance(rows[1][1], FeaturizationError) and "4 fields" in str(rows[1][1])
    assert rows[2][1] == "CCN" and rows[2][2].tolist() == [3.0]


def test_trailing_empty_fields_are_ignored(tmp_path):
    path = write(tmp_path, "t.csv", "smiles,y\nCCO,1,\nCCN,2,,\nCCC,3,x\n")
    rows = rows_of(path)
    assert [r[1] for r in rows[:2]] == ["CCO", "CCN"] and rows[1][2].tolist() == [2.0]
    assert "3 fields" in str(rows[2][1])


def test_duplicate_header_names(tmp_path):
    path = write(tmp_path, "dup.csv", "smiles,y,name,y\nCCO,1,a,2\n")
    with pytest.raises(DataError, match=r"duplicate column name 'y' \(columns 2 and 4\)"):
        open_table(path)
    path = write(tmp_path, "two.csv", "SMILES,y,smiles\nCCO,1,CCN\n")
    with pytest.raises(DataError, match="several SMILES columns"):
        open_table(path)
    assert open_table(path, smiles_column="smiles").smiles_column == "smiles"


def test_bom_and_crlf(tmp_path):
    path = write(tmp_path, "bom.csv", b"\xef\xbb\xbf" + CSV_TEXT.replace("\n", "\r\n").encode())
    table = open_table(path)
    assert table.smiles_column == "smiles" and table.target_names == ("y",)
    expect_good(list(table))


def test_quoted_newlines_and_commas(tmp_path):
    path = write(tmp_path, "q.csv", 'name,smiles,y\n"a,\nb",CCO,1\n"c",' '"C\nC",2\nd,CCN,"3"\n')
    summary = build_store(path, tmp_path / "s", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"]) == (3, 2)
    assert GraphStore.open(tmp_path / "s").source_row.tolist() == [1, 3]
    [r] = rejects_of(tmp_path / "s")
    assert r["row"] == "2" and r["reason"] == "whitespace inside SMILES"


def test_missing_targets_masked_and_counted(tmp_path):
    values = ["1.5", "NaN", "inf", "-inf", "n/a", "", "none", "?", "abc", "2"]
    path = write(tmp_path, "t.csv", "smiles,y,z\n" + "".join(f"CCO,{v},1\n" for v in values))
    summary = build_store(path, tmp_path / "s", n_jobs=1, targets=["y", "z"])
    assert summary["rows_kept"] == len(values)
    assert summary["targets_missing"] == {"y": len(values) - 2, "z": 0}
    y = GraphStore.open(tmp_path / "s").targets[:, 0]
    assert y[0] == 1.5 and y[-1] == 2.0 and np.isnan(y[1:-1]).all()


def test_gzip_csv_and_sdf(tmp_path):
    path = tmp_path / "a.csv.gz"
    with gzip.open(path, "wt", encoding="utf-8") as f:
        f.write(CSV_TEXT)
    assert open_table(path).kind == "csv"
    expect_good(rows_of(path))
    summary = build_store(path, tmp_path / "s", n_jobs=1, progress=lambda done, total: None)
    assert summary["rows_kept"] == 4
    sdf = tmp_path / "a.sdf.gz"
    with gzip.open(sdf, "wt", encoding="utf-8") as f:
        for s, y in GOOD:
            f.write(Chem.MolToMolBlock(Chem.MolFromSmiles(s)) + f">  <y>\n{y}\n\n$$$$\n")
    rows = rows_of(sdf)
    assert [Chem.MolToSmiles(r[1]) for r in rows] == ["CCO", "c1ccccc1", "CC(=O)O", "CCN"]
    assert open_table(sdf).estimate_rows() == 4


def _read_position(path) -> int:
    """How far this process has read into ``path`` (its open descriptor's file position)."""
    for fd in os.listdir("/proc/self/fd"):
        try:
            if os.readlink(f"/proc/self/fd/{fd}") == str(path):
                info = open(f"/proc/self/fdinfo/{fd}").read()
                return int(info.split("pos:")[1].split()[0])
        except OSError:
            continue
    raise AssertionError(f"{path} is not open")


@pytest.mark.skipif(not os.path.isdir("/proc/self/fdinfo"), reason="needs Linux /proc")
def test_gzip_is_streamed(tmp_path):
    path = tmp_path / "big.csv.gz"
    rng = np.random.default_rng(0)
    with gzip.open(path, "wt", encoding="utf-8") as f:                # ~2 MB compressed
        f.write("smiles,y\n" + "".join(f"CCO,{v!r}\n" for v in rng.random(200_000)))
    it = iter(open_table(path, targets=["y"]))
    assert next(it)[1] == "CCO"                                  # no full decompression first
    assert _read_position(path) < path.stat().st_size // 4


def test_gzip_without_gz_suffix_and_corrupt_gzip(tmp_path):
    path = tmp_path / "a.csv"
    path.write_bytes(gzip.compress(CSV_TEXT.encode()))
    expect_good(rows_of(path))
    data = gzip.compress(("smiles,y\n" + "CCO,1\n" * 50_000).encode())
    cut = write(tmp_path, "cut.csv.gz", data[: len(data) // 2])
    with pytest.raises(DataError, match="corrupt or truncated gzip"):
        rows_of(cut, targets=["y"])


def test_sdf_broken_record_in_middle(tmp_path):
    good = [Chem.MolToMolBlock(Chem.MolFromSmiles(s)) + f">  <y>\n{y}\n\n$$$$\n" for s, y in GOOD]
    broken = "junk\n\n\n  3  2  0  0  0  0  0  0  0  0999 V2000\nnot an atom\nM  END\n$$$$\n"
    garbage = "\x01\x02 random bytes that are text\n$$$$\n"
    text = good[0] + broken + good[1] + garbage + good[2] + good[3]
    path = write(tmp_path, "m.sdf", text.replace("\n", "\r\n"))
    summary = build_store(path, tmp_path / "s", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_rejected"]) == (6, 4, 2)
    store = GraphStore.open(tmp_path / "s")
    assert store.source_row.tolist() == [1, 3, 5, 6]
    assert store.targets[:, 0].tolist() == [float(y) for _, y in GOOD]
    assert [r["reason"] for r in rejects_of(tmp_path / "s")] == ["unparsable SDF record"] * 2


@pytest.mark.slow
def test_huge_sdf_record_rejected_fast(tmp_path):
    mol = Chem.MolFromSmiles("c1ccccc1" * 120)                   # 720 aromatic atoms
    block = Chem.MolToMolBlock(mol) + "$$$$\n"
    path = write(tmp_path, "h.sdf", block + Chem.MolToMolBlock(Chem.MolFromSmiles("CO")) + "$$$$\n")
    rows = rows_of(path)
    assert "too many atoms (720 > 500)" in str(rows[0][1]) and rows[1][1].GetNumAtoms() == 2


def test_long_field_is_read(tmp_path):
    path = write(tmp_path, "l.csv", f"smiles,y\n{'C' * 300_000},1\nCCO,2\n")   # > csv's 128 kB
    summary = build_store(path, tmp_path / "s", n_jobs=1)
    assert (summary["rows_kept"], summary["rows_rejected"]) == (1, 1)
    assert "too long" in rejects_of(tmp_path / "s")[0]["reason"]


@pytest.mark.parametrize("name, data, match", [
    ("latin1.csv", "smiles,y\nCCO,1\nCC\xe9,2\n".encode("latin-1"), r"not UTF-8 text \(line 3"),
    ("binary.csv", bytes(range(256)) * 40, "not UTF-8 text"),
    ("binary.sdf", b"\x89PNG\r\n\x1a\n" + os.urandom(2000), "not UTF-8 text"),
    ("zeros.csv", b"\x00" * 1000, "no 'smiles' column"),
    ("empty.csv", b"", "empty file"),
    ("empty.csv.gz", gzip.compress(b""), "empty file"),
    ("blank.csv", b"\n\n\n", "empty file"),
    ("empty.sdf", b"\n", "no SDF records"),
])
def test_unreadable_files(tmp_path, name, data, match):
    path = write(tmp_path, name, data)
    with pytest.raises(DataError, match=match) as err:
        build_store(path, tmp_path / "s", n_jobs=1)
    assert str(path) in str(err.value) and "\n" not in str(err.value)
    assert not (tmp_path / "s").exists()


def test_header_only(tmp_path):
    path = write(tmp_path, "h.csv", "smiles,y\n")
    assert rows_of(path, targets=["y"]) == []
    with pytest.raises(DataError, match="no data rows; the file has only a header"):
        build_store(path, tmp_path / "s", n_jobs=1, targets=["y"])


def test_counts_add_up_on_a_mixed_bad_file(tmp_path):
    body = ("smiles;y\nCCO;1\nC1CC;2\n;3\nCCN;x\nc1ccccc1;1;9\n\"CC\n\";4\n"
            "[Na+].[Cl-];nan\nCCO")
    path = write(tmp_path, "mixed.csv", "\ufeff" + body.replace("\n", "\r\n"))
    summary = build_store(path, tmp_path / "s", n_jobs=2, chunk_size=2)
    assert summary["rows_read"] == 8 == summary["rows_kept"] + summary["rows_rejected"]
    rejects = rejects_of(tmp_path / "s")
    assert [int(r["row"]) for r in rejects] == [2, 3, 5, 8]
    assert all(r["reason"] for r in rejects)
    assert summary["targets_missing"] == {"y": 2}
    assert math.isnan(GraphStore.open(tmp_path / "s").targets[1, 0])


def test_cli_preprocess_gzip_and_duplicate_header(tmp_path):
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    path = tmp_path / "a.csv.gz"
    path.write_bytes(gzip.compress((CSV_TEXT + "C1CC,9\n").encode()))
    result = runner.invoke(app, ["preprocess", str(path), "-o", str(tmp_path / "s")])
    assert result.exit_code == 0, result.output
    assert "5 rows read, 4 kept, 1 rejected" in result.output
    dup = write(tmp_path, "dup.csv", "smiles,y,y\nCCO,1,2\n")
    result = runner.invoke(app, ["preprocess", str(dup), "-o", str(tmp_path / "d")])
    assert result.exit_code == 2 and "duplicate column name 'y'" in result.stderr
    assert "Traceback" not in result.output
