"""build_store: resumable after a cut gzip file or an interruption, a killed worker's block
redone (nothing written twice), SMILES / Parquet / SDF inputs."""

import csv
import gzip
import io
import json
import sys

import numpy as np
import pytest
from rdkit import Chem

from molpipe.chem.featurize import featurize
from molpipe.data.build import build_store, partial_dir
from molpipe.data.errors import DataError
from molpipe.data.records import KILL_ENV, KILL_ONCE_ENV
from molpipe.data.store import GraphStore, open_data

from .test_store import assert_same_graph

BASE = ["CCO", "c1ccccc1", "C1CC", "CC(=O)[O-].[Na+]", "F/C=C/F", "C(C)(C)(C)(C)C",
        "c1ccc2ccccc2c1", "C[C@H](N)O", "[NH4+]", "OC1CCCCC1c1ccccc1", "", "CN"]


def rows_text(n: int) -> str:
    """``n`` data rows: SMILES (some broken) and two targets (some not numbers)."""
    out = ["smiles,y,z"]
    for i in range(n):
        z = "abc" if i % 97 == 5 else ("" if i % 13 == 0 else f"{i / 7:.3f}")
        out.append(f"{BASE[i % len(BASE)]},{i},{z}")
    return "\n".join(out) + "\n"


def store_files(path):
    """Every file of a store but meta.json, as bytes (npy headers included)."""
    return {p.name: p.read_bytes() for p in sorted(path.iterdir()) if p.name != "meta.json"}


def assert_same_store(a, b):
    fa, fb = store_files(a), store_files(b)
    assert sorted(fa) == sorted(fb)
    for name in fa:
        assert fa[name] == fb[name], name
    ma, mb = (json.loads((p / "meta.json").read_text()) for p in (a, b))
    for k in ("rows_read", "rows_kept", "rows_rejected", "targets_missing",
              "targets_not_numbers"):
        assert ma[k] == mb[k], k


@pytest.fixture
def big_gz(tmp_path):
    path = tmp_path / "big.csv.gz"
    path.write_bytes(gzip.compress(rows_text(3000).encode()))
    return path


def test_cut_gzip_keeps_rows_and_resumes(big_gz, tmp_path):
    full = big_gz.read_bytes()
    fresh = tmp_path / "fresh"
    build_store(big_gz, fresh, n_jobs=1, chunk_size=100)
    big_gz.write_bytes(full[: len(full) * 2 // 3])               # a cut download
    out = tmp_path / "store"
    with pytest.raises(DataError) as err:
        build_store(big_gz, out, n_jobs=1, chunk_size=100)
    message = str(err.value)
    assert str(big_gz) in message and "truncated gzip" in message and "\n" not in message
    last = int(message.split("rows 1-")[1].split()[0])
    assert 1000 < last < 3000                         # every whole line before the cut
    assert not out.exists() and (partial_dir(out) / "journal.json").is_file()
    notes = []
    with pytest.raises(DataError, match=f"rows 1-{last} are kept"):   # same file: same place
        build_store(big_gz, out, n_jobs=1, chunk_size=100, notice=notes.append)
    assert notes == [f"resuming {out} after row {last} (the input up to it is unchanged)"]
    big_gz.write_bytes(full)                                       # downloaded again, whole
    summary = build_store(big_gz, out, n_jobs=2, chunk_size=100)
    assert summary["resumed_from_row"] == last and summary["rows_read"] == 3000
    assert not partial_dir(out).exists()
    assert_same_store(out, fresh)


def test_interrupted_build_resumes(big_gz, tmp_path):
    fresh = tmp_path / "fresh"
    build_store(big_gz, fresh, n_jobs=1, chunk_size=100)
    calls = []

    def stop(done, total):
        calls.append(done)
        if len(calls) == 7:
            raise KeyboardInterrupt

    out = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build_store(big_gz, out, n_jobs=2, chunk_size=100, progress=stop)
    summary = build_store(big_gz, out, n_jobs=1, chunk_size=100)
    assert summary["resumed_from_row"] == 700
    assert_same_store(out, fresh)


def test_changed_input_or_settings_start_over(big_gz, tmp_path):
    out = tmp_path / "store"
    with pytest.raises(KeyboardInterrupt):
        build_store(big_gz, out, n_jobs=1, chunk_size=100,
                    progress=lambda done, total: done >= 500 and (_ for _ in ()).throw(
                        KeyboardInterrupt))
    notes = []
    summary = build_store(big_gz, out, n_jobs=1, chunk_size=100, max_rounds=5,
                          notice=notes.append)
    assert summary["resumed_from_row"] == 0 and "other settings; starting over" in notes[0]
    with pytest.raises(KeyboardInterrupt):
        build_store(big_gz, out, n_jobs=1, chunk_size=100,
                    progress=lambda done, total: done >= 500 and (_ for _ in ()).throw(
                        KeyboardInterrupt))
    text = rows_text(3000).replace("\nCCO,0,", "\nCCN,0,", 1)     # an early row differs
    big_gz.write_bytes(gzip.compress(text.encode()))
    notes = []
    summary = build_store(big_gz, out, n_jobs=1, chunk_size=100, notice=notes.append)
    assert summary["resumed_from_row"] == 0 and "changed since the interrupted build" in notes[0]
    assert GraphStore.open(out).smiles[0] == "CCN"


def test_killed_worker_block_is_redone_once(big_gz, tmp_path, monkeypatch):
    fresh = tmp_path / "fresh"
    build_store(big_gz, fresh, n_jobs=1, chunk_size=100)
    monkeypatch.setenv(KILL_ENV, "OC1CCCCC1c1ccccc1")
    monkeypatch.setenv(KILL_ONCE_ENV, str(tmp_path / "killed-once"))
    out = tmp_path / "store"
    summary = build_store(big_gz, out, n_jobs=2, chunk_size=100)
    assert (tmp_path / "killed-once").exists()                     # a worker did die
    assert summary["rows_read"] == 3000
    assert_same_store(out, fresh)                                  # nothing lost, nothing twice


def test_row_that_always_kills_its_worker_is_rejected(tmp_path, monkeypatch):
    path = tmp_path / "k.csv"
    path.write_text(rows_text(300))
    monkeypatch.setenv(KILL_ENV, "F/C=C/F")
    summary = build_store(path, tmp_path / "s", n_jobs=2, chunk_size=32)
    n_killers = sum(1 for i in range(300) if BASE[i % len(BASE)] == "F/C=C/F")
    assert summary["rows_read"] == 300
    with open(tmp_path / "s" / "rejects.csv", newline="") as f:
        rejects = list(csv.DictReader(f))
    died = [r for r in rejects if "featurizing process died on this row" in r["reason"]]
    assert len(died) == n_killers and {r["smiles"] for r in died} == {"F/C=C/F"}
    assert [int(r["row"]) for r in died] == [i + 1 for i in range(300)
                                             if BASE[i % len(BASE)] == "F/C=C/F"]
    store = GraphStore.open(tmp_path / "s")
    assert "F/C=C/F" not in list(store.smiles)
    for i in range(0, len(store), 37):
        assert_same_graph(store[i], featurize(store.smiles[i]))


def test_too_many_rows_killing_their_workers_stop_the_build(tmp_path, monkeypatch):
    from molpipe.data import pool

    path = tmp_path / "k.csv"
    path.write_text(rows_text(30))                                 # rows 5, 17, 29 kill
    monkeypatch.setenv(KILL_ENV, "F/C=C/F")
    monkeypatch.setattr(pool, "MAX_DEAD_ROWS", 1)
    with pytest.raises(DataError) as err:
        build_store(path, tmp_path / "s", n_jobs=2, chunk_size=4)
    assert str(err.value).startswith(f"{path}: featurizing processes died on 2 rows, each "
                                     "alone; stopping (is the machine out of memory?)")


def test_smi_and_smi_gz_stores(tmp_path):
    text = "smiles name\nCCO ethanol\n# comment\n\nC1CC broken\nc1ccccc1 benzene\n"
    for name, data in (("m.smi", text.encode()), ("m.smi.gz", gzip.compress(text.encode()))):
        path = tmp_path / name
        path.write_bytes(data)
        summary = build_store(path, tmp_path / name.replace(".", "-"), n_jobs=1)
        assert (summary["rows_read"], summary["rows_kept"]) == (3, 2)
        store = GraphStore.open(tmp_path / name.replace(".", "-"))
        assert list(store.smiles) == ["CCO", "c1ccccc1"] and store.source_row.tolist() == [1, 3]
        assert store.targets.shape == (2, 0)
    with pytest.raises(DataError, match="a SMILES file has no target columns"):
        build_store(tmp_path / "m.smi", tmp_path / "x", targets=["y"])


def test_sdf_gz_store_in_blocks(tmp_path):
    from .conftest import BROKEN, _record

    text = _record("CCO", {"y": "1"}) + BROKEN + _record("c1ccccc1O", {"y": "2"}) * 5
    path = tmp_path / "m.sdf.gz"
    path.write_bytes(gzip.compress(text.encode()))
    summary = build_store(path, tmp_path / "s", n_jobs=2, chunk_size=2)
    assert (summary["rows_read"], summary["rows_kept"]) == (7, 6)
    store = GraphStore.open(tmp_path / "s")
    assert store.source_row.tolist() == [1, 3, 4, 5, 6, 7]
    assert list(store.smiles)[:2] == ["CCO", "Oc1ccccc1"] and store.targets[1, 0] == 2.0


def test_sdf_gz_cut_inside_a_record_resumes_at_that_record(tmp_path):
    """A cut after ``M  END`` of record 201: that record is neither kept half (its target
    lost) nor, with the file whole again, resumed from its middle (an extra reject)."""
    from .conftest import _record

    records = [_record(BASE[i % 2], {"y": str(i)}) for i in range(360)]
    text = "".join(records).encode()
    cut = len("".join(records[:200])) + records[200].index("M  END\n") + len("M  END\n")
    packed = io.BytesIO()
    with gzip.GzipFile(fileobj=packed, mode="wb", mtime=0) as g:
        g.write(text[:cut])
        g.flush()                                                  # every byte before the cut
        whole_to_cut = packed.tell()
        g.write(text[cut:])
    full = packed.getvalue()
    path = tmp_path / "m.sdf.gz"
    path.write_bytes(full)
    fresh = tmp_path / "fresh"
    build_store(path, fresh, n_jobs=1, chunk_size=30)
    path.write_bytes(full[:whole_to_cut])                          # a cut download
    out = tmp_path / "store"
    with pytest.raises(DataError) as err:
        build_store(path, out, n_jobs=1, chunk_size=30)
    assert str(path) in str(err.value) and "truncated gzip" in str(err.value)
    assert "rows 1-200 are kept" in str(err.value)
    path.write_bytes(full)
    summary = build_store(path, out, n_jobs=2, chunk_size=30)
    assert summary["resumed_from_row"] == 200
    assert (summary["rows_read"], summary["rows_rejected"]) == (360, 0)
    assert_same_store(out, fresh)


def test_parquet_store(tmp_path):
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    smiles = ["CCO", "C1CC", None, "c1ccccc1", "CCN"] * 40
    y = [1.5, 2.0, None, float("nan"), 3.0] * 40
    label = ["1", "abc", None, "n/a", "2.5"] * 40
    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"name": [f"m{i}" for i in range(200)], "SMILES": smiles, "y": y,
                             "label": label}), path, row_group_size=64)
    assert open_data(path, cache_root=tmp_path / "cache", n_jobs=1).target_names == ["y"]
    summary = build_store(path, tmp_path / "s", targets=["y", "label"], n_jobs=2, chunk_size=50)
    assert (summary["rows_read"], summary["rows_kept"]) == (200, 120)
    assert summary["targets_not_numbers"] == {"label": {"count": 40, "rows": [2, 7, 12, 17, 22],
                                                         "values": ["abc"] * 5}}
    store = GraphStore.open(tmp_path / "s")
    assert store.source_row.tolist()[:3] == [1, 4, 5] and list(store.smiles)[:2] == ["CCO",
                                                                                    "c1ccccc1"]
    assert store.targets[0].tolist() == [1.5, 1.0] and np.isnan(store.targets[1]).tolist() == [
        True, True]
    with open(tmp_path / "s" / "rejects.csv", newline="") as f:
        reasons = {r["reason"] for r in csv.DictReader(f)}
    assert reasons == {"unparsable SMILES", "empty SMILES"}


def test_parquet_unreadable_page_names_the_file_and_the_rows_before(tmp_path):
    """A cut file loses its footer (and cannot be opened); a damaged row group is met only
    while the batches are read."""
    pa = pytest.importorskip("pyarrow")
    import pyarrow.parquet as pq

    path = tmp_path / "m.parquet"
    pq.write_table(pa.table({"smiles": ["CCO", "CCN"] * 100, "y": [1.0] * 200}), path,
                   row_group_size=100)
    data = bytearray(path.read_bytes())
    for column in range(2):                                        # row group 2: garbage
        chunk = pq.ParquetFile(path).metadata.row_group(1).column(column)
        start = chunk.dictionary_page_offset or chunk.data_page_offset
        data[start:start + chunk.total_compressed_size] = b"\xff" * chunk.total_compressed_size
    path.write_bytes(bytes(data))
    with pytest.raises(DataError) as err:
        build_store(path, tmp_path / "s", n_jobs=1, chunk_size=50)
    assert str(err.value).startswith(f"{path}: not a readable Parquet file after row 100 (")
    assert "\n" not in str(err.value)
    assert "rows 1-100 are kept" in str(err.value)


def test_parquet_without_pyarrow_says_what_to_install(tmp_path, monkeypatch):
    path = tmp_path / "m.parquet"
    path.write_bytes(b"PAR1 not really")
    monkeypatch.setitem(sys.modules, "pyarrow", None)
    monkeypatch.setitem(sys.modules, "pyarrow.parquet", None)
    with pytest.raises(DataError, match=r"needs pyarrow; install it with pip install "
                                        r"'molpipe\[parquet\]'"):
        build_store(path, tmp_path / "s")


def test_another_build_of_the_same_store_is_refused(big_gz, tmp_path):
    import fcntl

    out = tmp_path / "store"
    partial_dir(out).mkdir()
    with open(partial_dir(out) / "lock", "w") as held:
        fcntl.flock(held, fcntl.LOCK_EX)
        with pytest.raises(DataError, match="another molpipe preprocess is writing"):
            build_store(big_gz, out, n_jobs=1)
    build_store(big_gz, out, n_jobs=1, chunk_size=1000)
    assert len(GraphStore.open(out)) > 0


def test_mols_read_from_sdf_match_featurize(tmp_path):
    mols = [Chem.MolFromSmiles(s) for s in ("CC(=O)Nc1ccc(O)cc1", "C[C@H](N)C(=O)O")]
    path = tmp_path / "m.sdf"
    with Chem.SDWriter(str(path)) as w:
        for m in mols:
            w.write(m)
    build_store(path, tmp_path / "s", n_jobs=1)
    store = GraphStore.open(tmp_path / "s")
    for i, m in enumerate(Chem.SDMolSupplier(str(path))):
        assert_same_graph(store[i], featurize(m))


def test_cli_preprocess_says_it_resumed(big_gz, tmp_path):
    from typer.testing import CliRunner

    from cli import app

    full = big_gz.read_bytes()
    big_gz.write_bytes(full[: len(full) // 2])
    runner = CliRunner()
    args = ["preprocess", str(big_gz), "-o", str(tmp_path / "s"), "--jobs", "1"]
    result = runner.invoke(app, args)
    assert result.exit_code == 2 and "truncated gzip" in result.stderr
    assert "rerun the same command to resume" in result.stderr
    big_gz.write_bytes(full)
    result = runner.invoke(app, args)
    assert result.exit_code == 0, result.output
    assert "resuming" in result.output and "resumed after row" in result.output
    assert "3000 rows read" in result.output


def test_a_smiles_file_with_bare_carriage_returns_is_rejected_with_its_reason(tmp_path):
    """Old Mac line ends make the file one line; its molecules are not silently read as
    the first one's name: the row goes to rejects, saying why."""
    path = tmp_path / "mac.smi"
    path.write_bytes(b"CCO ethanol\rc1ccccc1\rCCN\r")
    summary = build_store(path, tmp_path / "s", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_rejected"]) == (1, 0, 1)
    with open(tmp_path / "s" / "rejects.csv", newline="") as f:
        (row,) = list(csv.DictReader(f))
    assert row["row"] == "1" and "carriage return" in row["reason"]
    path.write_bytes(b"CCO ethanol\r\nc1ccccc1\r\nCCN\r\n")           # \r\n: three rows
    summary = build_store(path, tmp_path / "t", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"]) == (3, 3)
