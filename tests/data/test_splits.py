"""Splits: sizes, disjointness, determinism, whole scaffold groups."""

import json

import numpy as np
import pytest

from molpipe.data.errors import DataError
from molpipe.data.registry import get_dataset
from molpipe.data.splits import murcko_scaffold, random_split, scaffold_split, split_from_file


def check_partition(parts, n):
    for p in parts:
        assert p.dtype == np.int64 and (np.diff(p) > 0).all()
    assert np.array_equal(np.sort(np.concatenate(parts)), np.arange(n))


def test_random_split():
    parts = random_split(1000, (0.8, 0.1, 0.1), seed=3)
    check_partition(parts, 1000)
    assert [len(p) for p in parts] == [800, 100, 100]
    assert all(np.array_equal(a, b) for a, b in zip(parts, random_split(1000, seed=3)))
    assert not np.array_equal(parts[0], random_split(1000, seed=4)[0])


def test_bad_fractions():
    with pytest.raises(ValueError):
        random_split(10, (0.5, 0.1, 0.1))


@pytest.fixture(scope="module")
def esol_smiles():
    import csv
    with open(get_dataset("esol").path, newline="") as f:
        return [r["smiles"] for r in csv.DictReader(f)]


def test_scaffold_split_keeps_groups_whole(esol_smiles):
    parts = scaffold_split(esol_smiles, (0.8, 0.1, 0.1), seed=0)
    check_partition(parts, len(esol_smiles))
    scaffolds = [{murcko_scaffold(esol_smiles[i]) for i in p} for p in parts]
    assert not (scaffolds[0] & scaffolds[1] or scaffolds[0] & scaffolds[2]
                or scaffolds[1] & scaffolds[2])
    assert abs(len(parts[0]) - 0.8 * len(esol_smiles)) < 0.05 * len(esol_smiles)
    again = scaffold_split(esol_smiles, (0.8, 0.1, 0.1), seed=0)
    assert all(np.array_equal(a, b) for a, b in zip(parts, again))


def test_scaffold_benzene_family():
    smiles = ["c1ccccc1C", "c1ccccc1CC", "c1ccccc1O", "C1CCCCC1", "CCO", "CCN"]
    train, val, test = scaffold_split(smiles, (0.5, 0.25, 0.25), seed=1)
    benzenes = {0, 1, 2}
    for p in (train, val, test):
        assert benzenes <= set(p.tolist()) or not benzenes & set(p.tolist())


def test_split_from_file(tmp_path):
    path = tmp_path / "split.json"
    path.write_text(json.dumps({"train": [3, 0, 1], "val": [2], "test": []}))
    train, val, test = split_from_file(path)
    assert train.tolist() == [0, 1, 3] and val.tolist() == [2] and test.dtype == np.int64
    path.write_text(json.dumps({"train": [0, 1], "val": [1], "test": []}))
    with pytest.raises(DataError, match="appears twice"):
        split_from_file(path)
    path.write_text(json.dumps({"train": [0]}))
    with pytest.raises(DataError, match="train, val, test"):
        split_from_file(path)
