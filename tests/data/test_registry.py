"""Bundled data sets: manifest, files, lookup by name and by path."""

import csv
import hashlib
from pathlib import Path

import pytest

from molpipe.data.errors import DataError
from molpipe.data.registry import find_by_path, get_dataset, list_datasets

SHARED = Path("/work/shared/data")


def test_manifest_matches_files():
    entries = {e.name: e for e in list_datasets()}
    assert set(entries) == {"esol", "freesolv", "lipo", "qm9"}
    assert len(entries["qm9"].targets) == 12
    for e in entries.values():
        with open(e.path, newline="") as f:
            reader = csv.reader(f)
            header = next(reader)
            assert sum(1 for _ in reader) == e.rows
        assert e.smiles_column in header and set(e.targets) <= set(header)
        assert set(e.units) == set(e.targets)
        assert len(e.source["commit"]) == 40 and e.citation and e.licence


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
