"""Graph store: round trip equals direct featurization; every row kept or rejected."""

import csv
import json
import mmap
import os

import numpy as np
import pytest

from molpipe.chem.featurize import FEATURIZER_VERSION, featurize
from molpipe.data.errors import DataError
from molpipe.data.store import GraphStore, build_store, open_data, release_pages

from .conftest import CSV_ROWS

FIELDS = ("V", "E", "edge_index", "edge_type", "ring_atoms", "ring_offsets", "ring_system",
          "fragment", "n_rounds", "has_rings")
MIXED = ["c1ccc2ccccc2c1", "C", "[Na+].[Cl-]", "CC(=O)[O-].[Na+]", "C1CC12CC2", "CCCCCCCCCC",
         "C1=CC=CN=C1", "F/C=C/F", "[13CH4]", "OC1CCCCC1c1ccccc1"]


def assert_same_graph(a, b):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), f
        else:
            assert x == y, f


@pytest.fixture
def mixed_csv(tmp_path):
    path = tmp_path / "mixed.csv"
    path.write_text("smiles,y\n" + "".join(f"{s},{i}\n" for i, s in enumerate(MIXED)))
    return path


@pytest.mark.parametrize("n_jobs, chunk", [(1, 256), (2, 3)])
def test_round_trip(mixed_csv, tmp_path, n_jobs, chunk):
    summary = build_store(mixed_csv, tmp_path / "store", n_jobs=n_jobs, chunk_size=chunk)
    assert summary["rows_kept"] == len(MIXED) and summary["rows_rejected"] == 0
    store = GraphStore.open(tmp_path / "store")
    assert len(store) == len(MIXED) and store.smiles == MIXED
    assert store.target_names == ["y"] and store.targets[:, 0].tolist() == list(range(len(MIXED)))
    assert store.source_row.tolist() == list(range(1, len(MIXED) + 1))
    for i, s in enumerate(MIXED):
        g = featurize(s)
        assert_same_graph(store[i], g)
        assert store.n_rounds[i] == g.n_rounds and store.has_rings[i] == g.has_rings
    assert store.n_rounds.dtype == np.int32 and store.has_rings.dtype == bool
    assert_same_graph(store[-1], featurize(MIXED[-1]))
    assert [g.n_atoms for g in store.graphs([2, 0])] == [2, 10]


def test_arrays_are_plain_compact_npy(mixed_csv, tmp_path):
    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    found = {f.stem: np.load(f, mmap_mode="r", allow_pickle=False)
             for f in (tmp_path / "s").glob("*.npy")}
    assert set(found) == {"atoms", "fragment", "bonds", "bond_codes", "ring_atoms", "ring_sizes",
                          "ring_system", "atom_offsets", "bond_offsets", "ring_offsets",
                          "ring_atom_offsets", "smiles_offsets", "targets", "n_rounds",
                          "has_rings", "source_row"}
    n_atoms = sum(featurize(s).n_atoms for s in MIXED)
    assert found["atoms"].shape == (n_atoms, 8) and found["atoms"].dtype == np.uint8
    assert found["bonds"].dtype == np.uint16 and found["bond_codes"].shape == (len(found["bonds"]),)
    assert found["atom_offsets"].tolist()[-1] == n_atoms and found["smiles_offsets"].shape == (11,)
    store = GraphStore.open(tmp_path / "s")
    assert isinstance(store._arrays["atoms"].base, np.memmap)      # read from the file on demand
    assert store.meta["store_format"] == 2


def test_old_store_format_asks_for_a_rebuild(mixed_csv, tmp_path):
    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    meta = json.loads((tmp_path / "s" / "meta.json").read_text())
    del meta["store_format"]                                # what format 1 wrote
    (tmp_path / "s" / "meta.json").write_text(json.dumps(meta))
    with pytest.raises(DataError, match="format 1.*rebuild it with `molpipe preprocess`"):
        GraphStore.open(tmp_path / "s")


def test_smiles_are_a_lazy_sequence(mixed_csv, tmp_path):
    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    smiles = GraphStore.open(tmp_path / "s").smiles
    assert len(smiles) == len(MIXED) and smiles == MIXED and list(smiles) == MIXED
    assert smiles[0] == MIXED[0] and smiles[-1] == MIXED[-1] and smiles[np.int64(3)] == MIXED[3]
    assert smiles[2:5] == MIXED[2:5] and smiles[::-3] == MIXED[::-3]
    assert smiles[np.array([4, 1])] == [MIXED[4], MIXED[1]] and smiles != MIXED[:-1]
    with pytest.raises(IndexError):
        smiles[len(MIXED)]
    head = smiles.head(3)                     # --limit's prefix: as lazy, and bounded
    assert len(head) == 3 and head == MIXED[:3] and head[-1] == MIXED[2]
    with pytest.raises(IndexError):
        head[3]


def test_rejects_and_counts(bad_csv, tmp_path):
    out = tmp_path / "store"
    summary = build_store(bad_csv, out, n_jobs=2, chunk_size=2)
    assert summary["rows_read"] == len(CSV_ROWS) == summary["rows_kept"] + summary["rows_rejected"]
    with open(out / "rejects.csv", newline="") as f:
        rejects = list(csv.DictReader(f))
    assert [int(r["row"]) for r in rejects] == [3, 4, 6]
    assert [r["reason"] for r in rejects] == ["unparsable SMILES", "bad valence", "empty SMILES"]
    assert rejects[0]["smiles"] == "C1CC"
    store = GraphStore.open(out)
    assert store.source_row.tolist() == [1, 2, 5, 7]
    assert np.isnan(store.targets[2, 0]) and store.targets[2, 1] == 3.0   # "n/a" masked, kept
    meta = json.loads((out / "meta.json").read_text())
    assert (meta["rows_read"], meta["rows_kept"], meta["rows_rejected"]) == (7, 4, 3)
    assert meta["featurizer_version"] == FEATURIZER_VERSION and len(meta["source"]["sha256"]) == 64
    assert store.meta["smiles_column"] == "SMILES"


def test_sdf_store(sdf_with_broken_record, tmp_path):
    summary = build_store(sdf_with_broken_record, tmp_path / "s", n_jobs=1)
    assert (summary["rows_read"], summary["rows_kept"], summary["rows_rejected"]) == (3, 2, 1)
    store = GraphStore.open(tmp_path / "s")
    assert store.smiles == ["CCO", "Oc1ccccc1"] and store.source_row.tolist() == [1, 3]
    rejects = (tmp_path / "s" / "rejects.csv").read_text().splitlines()
    assert rejects[1].startswith("2,,")


def test_header_only_is_an_error_and_leaves_nothing(tmp_path):
    path = tmp_path / "h.csv"
    path.write_text("smiles,y\n")
    with pytest.raises(DataError, match="no data rows"):
        build_store(path, tmp_path / "s", n_jobs=1)
    assert sorted(p.name for p in tmp_path.iterdir()) == ["h.csv"]


def test_rebuild_replaces_and_refuses_foreign_dir(mixed_csv, tmp_path):
    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    build_store(mixed_csv, tmp_path / "s", n_jobs=1, targets=[])
    assert GraphStore.open(tmp_path / "s").targets.shape == (len(MIXED), 0)
    (tmp_path / "other").mkdir()
    (tmp_path / "other" / "keep.txt").write_text("x")
    with pytest.raises(DataError, match="not a graph store"):
        build_store(mixed_csv, tmp_path / "other", n_jobs=1)


def test_open_data_caches(mixed_csv, tmp_path):
    a = open_data(mixed_csv, cache_root=tmp_path / "cache", n_jobs=1)
    b = open_data(mixed_csv, cache_root=tmp_path / "cache", n_jobs=1)
    assert a.path == b.path and len(list((tmp_path / "cache").iterdir())) == 1
    c = open_data(mixed_csv, cache_root=tmp_path / "cache", n_jobs=1, max_rounds=3)
    assert c.path != a.path and c.n_rounds.max() <= 3
    assert open_data(a.path).path == a.path                  # a store directory opens directly


def test_open_data_bundled_name(tmp_path, monkeypatch):
    monkeypatch.setenv("MOLPIPE_CACHE", str(tmp_path))
    store = open_data("freesolv", n_jobs=1)
    assert store.target_names == ["freesolv"] and len(store) == 642
    assert store.path.parent == tmp_path


def test_open_data_unknown_name(tmp_path):
    with pytest.raises(DataError, match="did you mean lipo"):
        open_data("lipoo", cache_root=tmp_path)


def test_progress_and_bad_rounds(mixed_csv, tmp_path):
    calls = []
    build_store(mixed_csv, tmp_path / "s", n_jobs=1, chunk_size=4,
                progress=lambda done, total: calls.append((done, total)))
    assert [c[0] for c in calls] == [4, 8, 10] and calls[-1][1] >= 10
    with pytest.raises(ValueError, match="min_rounds"):
        build_store(mixed_csv, tmp_path / "t", min_rounds=4, max_rounds=3)


def test_open_store_with_target_subset(tmp_path):
    path = tmp_path / "two.csv"
    path.write_text("smiles,a,b\nCCO,1,2\nCCN,3,4\n")
    build_store(path, tmp_path / "s", n_jobs=1)
    store = open_data(tmp_path / "s", targets=["b"])
    assert store.target_names == ["b"] and store.targets[:, 0].tolist() == [2.0, 4.0]
    assert GraphStore.open(tmp_path / "s").target_names == ["a", "b"]
    with pytest.raises(DataError, match="no target 'c'"):
        open_data(tmp_path / "s", targets=["c"])


def test_targets_not_numbers_in_meta_and_summary(tmp_path):
    path = tmp_path / "typos.csv"
    path.write_text("smiles,a,b\nCCO,1,2\nC1CC,abc,3\nCCN,n/a,4\nCCC,,x1\nCCCl,2,5\nCCBr,zz,6\n")
    summary = build_store(path, tmp_path / "s", targets=["a", "b"], n_jobs=2, chunk_size=2)
    want = {"a": {"count": 2, "rows": [2, 6], "values": ["abc", "zz"]},
            "b": {"count": 1, "rows": [4], "values": ["x1"]}}
    assert summary["targets_not_numbers"] == want             # row 2 is rejected: still counted
    assert summary["targets_missing"] == {"a": 3, "b": 1}       # NaN among the 5 kept rows
    store = GraphStore.open(tmp_path / "s")
    assert store.meta["targets_not_numbers"] == want and store.targets_not_numbers == want
    assert np.isnan(store.targets[:, 0]).tolist() == [False, True, True, False, True]
    assert store.with_targets(["b"]).targets_not_numbers == {"b": want["b"]}


def test_no_not_numbers_is_an_empty_dict(mixed_csv, tmp_path):
    summary = build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    assert summary["targets_not_numbers"] == {}
    assert json.loads((tmp_path / "s" / "meta.json").read_text())["targets_not_numbers"] == {}


def test_store_without_not_numbers_still_opens(mixed_csv, tmp_path):
    """A store built before the count existed: no field in meta.json, read as {}."""
    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    meta_path = tmp_path / "s" / "meta.json"
    meta = json.loads(meta_path.read_text())
    del meta["targets_not_numbers"]
    meta_path.write_text(json.dumps(meta))
    store = open_data(tmp_path / "s")
    assert len(store) == len(MIXED) and store.targets_not_numbers == {}


@pytest.mark.parametrize("name, n, targets", [("bace", 1513, ["Class"]),
                                              ("clintox", 1478, ["FDA_APPROVED", "CT_TOX"])])
@pytest.mark.slow
def test_open_bundled_classification_set(tmp_path, monkeypatch, name, n, targets):
    monkeypatch.setenv("MOLPIPE_CACHE", str(tmp_path))
    store = open_data(name, n_jobs=1)
    assert store.path.parent == tmp_path and store.target_names == targets
    assert store.meta["rows_read"] == n and len(store) + store.meta["rows_rejected"] == n
    assert set(np.unique(store.targets).tolist()) == {0.0, 1.0}
    assert store.targets_not_numbers == {}


@pytest.mark.slow
@pytest.mark.parametrize("target", ["u0", "cv"])
def test_open_qm9_one_target(tmp_path, monkeypatch, target):
    monkeypatch.setenv("MOLPIPE_CACHE", str(tmp_path))
    store = open_data("qm9", targets=[target])
    assert store.target_names == [target] and store.targets.shape == (14862, 1)
    assert np.isfinite(store.targets).all()


def test_pack_equals_packing_the_graphs(mixed_csv, tmp_path):
    from molpipe.data.instance import pack

    build_store(mixed_csv, tmp_path / "store", n_jobs=1)
    store = GraphStore.open(tmp_path / "store")
    rows = np.array([7, 0, 2, 9, 4])
    got, want = store.pack(rows), pack(store.graphs(rows), store.targets[rows], rows=rows)
    for f in ("V", "E", "src", "dst", "etype", "atom_mol", "atom_rounds", "ring_atoms",
              "ring_offsets", "Y", "rows"):
        x, y = getattr(got, f), getattr(want, f)
        assert x.dtype == y.dtype and np.array_equal(x, y), f
    assert (got.n_rounds, got.has_rings) == (want.n_rounds, want.has_rings)
    assert got.rows.tolist() == rows.tolist()


def test_open_data_from_threads_builds_once(mixed_csv, tmp_path):
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(4) as pool:
        stores = list(pool.map(lambda _: open_data(mixed_csv, cache_root=tmp_path / "c",
                                                   n_jobs=1), range(4)))
    assert len({s.path for s in stores}) == 1 and all(len(s) == len(MIXED) for s in stores)
    assert [p.name for p in (tmp_path / "c").iterdir() if not p.name.endswith(".lock")] == [
        stores[0].path.name]


def test_a_store_and_its_smiles_pickle(mixed_csv, tmp_path):
    import pickle

    build_store(mixed_csv, tmp_path / "s", n_jobs=1)
    store = GraphStore.open(tmp_path / "s")
    assert store.smiles == MIXED
    copy = pickle.loads(pickle.dumps(store))
    assert copy.smiles == MIXED and len(copy) == len(MIXED)
    assert_same_graph(copy[3], store[3])
    assert len(pickle.dumps(store)) < 1000            # the directory, not the arrays
    view = pickle.loads(pickle.dumps(store.with_targets([])))
    assert view.target_names == [] and view.targets.shape == (len(MIXED), 0)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))


@pytest.mark.skipif(not hasattr(__import__("mmap"), "MADV_DONTNEED")
                    or not __import__("os").path.exists("/proc/self/status"),
                    reason="no madvise or /proc here")
def test_release_pages_gives_back_what_a_pass_mapped(tmp_path):
    rows = [f"{s},{i}\n" for i, s in enumerate(MIXED * 400)]         # 4,000 molecules
    (tmp_path / "big.csv").write_text("smiles,y\n" + "".join(rows))
    build_store(tmp_path / "big.csv", tmp_path / "store", n_jobs=1)
    store = GraphStore.open(tmp_path / "store")
    mapped_kib = sum(p.stat().st_size for p in (tmp_path / "store").glob("*.npy")) >> 10
    store.release_pages()
    before = _rss_file_kib()
    whole = store.pack(np.arange(len(store)))
    list(store.smiles)
    read = _rss_file_kib()
    store.release_pages()
    after = _rss_file_kib()
    assert read - before > mapped_kib // 2, (before, read, after, mapped_kib)
    assert read - after > mapped_kib // 2, (before, read, after, mapped_kib)
    again = store.pack(np.arange(len(store)))                         # still readable
    assert np.array_equal(again.V, whole.V) and np.array_equal(again.src, whole.src)


def _mapped_kib(path) -> int:
    """KiB of ``path``'s memory mappings resident in this process (/proc/self/smaps)."""
    total, inside = 0, False
    with open("/proc/self/smaps") as f:
        for line in f:
            if "-" in line.split(" ", 1)[0]:                 # a mapping's first line
                inside = line.rstrip().endswith(str(path))
            elif inside and line.startswith("Rss:"):
                total += int(line.split()[1])
    return total


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED") or not os.path.exists("/proc/self/smaps"),
                    reason="no madvise or /proc here")
def test_release_pages_of_a_store_without_the_method_drops_its_memmaps(tmp_path):
    """``release_pages`` falls back to the read-only ``np.memmap`` attributes of a store with
    no ``release_pages`` method: every page of the file leaves this process, still readable."""
    path, n = tmp_path / "V.npy", 4 << 20
    np.save(path, np.arange(n, dtype=np.float64))                    # 32 MiB
    store = type("Store", (), {})()
    store._V = np.load(path, mmap_mode="r")
    before = _rss_file_kib()
    assert float(store._V.sum()) == n * (n - 1) / 2
    read = _rss_file_kib()
    assert _mapped_kib(path) >= 32000
    release_pages(store)
    after = _rss_file_kib()
    assert _mapped_kib(path) == 0
    assert read - before > 24 << 10 and read - after > 24 << 10, (before, read, after)
    assert store._V[12345] == 12345 and float(store._V.sum()) == n * (n - 1) / 2   # faulted back
