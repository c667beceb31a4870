"""Bundled data sets: manifest, files, lookup by name and by path."""

import csv
import fnmatch
import gzip
import hashlib
from pathlib import Path

import numpy as np
import pytest

from molpipe.data.errors import DataError
from molpipe.data.readers import open_table
from molpipe.data.registry import (file_stem, find_by_path, get_dataset, is_dataset_name,
                                   list_datasets, resolve_source)

SHARED = Path("/work/shared/data")
ROOT = Path(__file__).resolve().parents[2]
CLASSIFICATION = {"bace": 1, "clintox": 2, "sider": 27, "tox21": 12, "hiv": 1}


def _open(path):
    if path.name.endswith(".gz"):
        return gzip.open(path, "rt", newline="", encoding="utf-8")
    return open(path, newline="", encoding="utf-8")


def test_manifest_matches_files():
    entries = {e.name: e for e in list_datasets()}
    assert set(entries) == {"esol", "freesolv", "lipo", "qm9", "qm8", *CLASSIFICATION}
    assert len(entries["qm9"].targets) == 12 and len(entries["qm8"].targets) == 12
    for e in entries.values():
        with _open(e.path) as f:
            reader = csv.reader(f)
            header = next(reader)
            assert sum(1 for _ in reader) == e.rows, e.name
        assert e.smiles_column in header and set(e.targets) <= set(header)
        assert set(e.units) == set(e.targets)
        assert len(e.source["commit"]) == 40 and e.citation and e.licence
        assert "MoleculeNet" in e.citation and e.task in ("regression", "classification")


def test_classification_sets():
    for name, n_tasks in CLASSIFICATION.items():
        e = get_dataset(name)
        assert e.task == "classification" and len(e.targets) == n_tasks, name
    bace, sider = get_dataset("bace"), get_dataset("sider")
    assert bace.smiles_column == "mol" and bace.targets == ("Class",)
    with _open(sider.path) as f:
        assert sider.targets == tuple(next(csv.reader(f))[1:])     # every column after smiles
    assert get_dataset("clintox").targets == ("FDA_APPROVED", "CT_TOX")
    assert get_dataset("hiv").targets == ("HIV_active",)


def test_qm8_units():
    units = get_dataset("qm8").units
    assert units["E1-CC2"] == "Hartree" and units["f2-CAM"].startswith("dimensionless")
    assert all(units[t] == "Hartree" for t in units if t.startswith("E"))


def test_binary_sets_hold_only_labels():
    """Every target cell of a classification set is 0, 1 or empty (missing)."""
    for name in CLASSIFICATION:
        e = get_dataset(name)
        with _open(e.path) as f:
            reader = csv.DictReader(f)
            cells = {row[t] for row in reader for t in e.targets}
        assert cells <= {"0", "1", ""}, (name, cells - {"0", "1", ""})


def test_gzip_set_found_by_name_and_stem():
    assert file_stem("hiv.csv.gz") == "hiv" and file_stem("qm9_subset.csv") == "qm9_subset"
    assert file_stem(Path("a/b/x.sdf.GZ")) == "x"
    assert get_dataset("HIV").path.name == "hiv.csv.gz" and is_dataset_name("qm8")
    assert not is_dataset_name("hiv.csv")
    path, entry = resolve_source("hiv")
    assert entry.name == "hiv" and path.is_file() and find_by_path(path) is entry


def test_gzip_set_reads_its_targets():
    """The bundled .csv.gz file opens with the manifest's columns (reader side, no featurizing)."""
    table = open_table(get_dataset("qm8").path)
    assert table.target_names == get_dataset("qm8").targets
    row, smiles, y = next(iter(table))
    assert row == 1 and smiles == "[H]C([H])([H])[H]" and y.dtype == np.float32
    assert y[0] == pytest.approx(0.43295186)


def test_installed_data_files_cover_every_bundled_file():
    tomllib = pytest.importorskip("tomllib")
    doc = tomllib.loads((ROOT / "pyproject.toml").read_text(encoding="utf-8"))
    patterns = doc["tool"]["setuptools"]["data-files"]["share/molpipe/datasets"]
    for e in list_datasets():
        rel = f"datasets/{e.path.name}"
        assert any(fnmatch.fnmatch(rel, p) for p in patterns), rel


@pytest.mark.skipif(not SHARED.exists(), reason="shared data not present")
def test_files_copied_unchanged():
    for e in list_datasets():
        digest = lambda p: hashlib.sha256(p.read_bytes()).hexdigest()
        assert digest(e.path) == digest(SHARED / e.path.name)


def test_lookup():
    assert get_dataset("LIPO").path.name == "lipophilicity.csv"
    assert get_dataset("qm9_subset").name == "qm9"
    assert find_by_path(get_dataset("esol").path).name == "esol"
    assert find_by_path(__file__) is None


def test_unknown_name_suggests():
    with pytest.raises(DataError, match="did you mean freesolv"):
        get_dataset("freesolve")


def test_an_installed_copy_is_found_when_no_checkout_is_beside_the_package(tmp_path, monkeypatch):
    import shutil

    from molpipe.data import registry

    share = tmp_path / "share" / "molpipe" / "datasets"
    shutil.copytree(registry.datasets_dir(), share)
    monkeypatch.delenv("MOLPIPE_DATASETS", raising=False)
    monkeypatch.setattr(registry.sys, "prefix", str(tmp_path))
    monkeypatch.setattr(registry, "__file__", str(tmp_path / "site" / "molpipe" / "data" / "registry.py"))
    assert registry.dataset_dirs()[-1] == share
    assert registry.datasets_dir() == share
