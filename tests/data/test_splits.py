"""Splits: sizes, disjointness, determinism, whole scaffold groups and clusters, class
shares, a split column."""

import json

import numpy as np
import pytest

from molpipe.data.errors import DataError
from molpipe.data.registry import get_dataset
from molpipe.data.splits import (balanced_scaffold_split, kmeans, kmeans_split, morgan_bits,
                                 murcko_scaffold, n_clusters, random_split, scaffold_split,
                                 split_from_column, split_from_file, stratified_split, strata)


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


def same(a, b):
    return all(np.array_equal(x, y) for x, y in zip(a, b))


def whole(parts, label):
    """Every group (label value) lies in exactly one part."""
    where = [set(np.asarray(label)[p].tolist()) for p in parts]
    return not (where[0] & where[1] or where[0] & where[2] or where[1] & where[2])


def test_balanced_scaffold_split_keeps_groups_whole_and_spreads_them(esol_smiles):
    n = len(esol_smiles)
    parts = balanced_scaffold_split(esol_smiles, (0.8, 0.1, 0.1), seed=0)
    check_partition(parts, n)
    label = [murcko_scaffold(s) for s in esol_smiles]
    assert whole(parts, label)
    for p, f in zip(parts, (0.8, 0.1, 0.1)):
        assert abs(len(p) - f * n) <= 0.02 * n
    assert same(parts, balanced_scaffold_split(esol_smiles, (0.8, 0.1, 0.1), seed=0))
    assert not same(parts, balanced_scaffold_split(esol_smiles, (0.8, 0.1, 0.1), seed=1))
    # groups of 2 or more molecules reach validation and test too, not only singletons
    size = {s: label.count(s) for s in set(label)}
    for p in parts[1:]:
        assert max(size[label[i]] for i in p) >= 2


def test_balanced_scaffold_big_groups_go_to_train():
    smiles = ["c1ccccc1" + "C" * k for k in range(8)] + ["C" * k + "O" for k in range(1, 9)] \
        + [f"C1CC{'C' * k}1" for k in range(4)] + ["c1ccncc1", "c1ccoc1", "c1ccsc1", "C1CCNC1"]
    train, val, test = balanced_scaffold_split(smiles, (0.6, 0.2, 0.2), seed=0)
    benzenes = set(range(8))           # 8 > half the validation size (24 * 0.2 / 2)
    assert benzenes <= set(train.tolist())
    train, val, test = balanced_scaffold_split(smiles, (0.8, 0.0, 0.2), seed=0)
    assert len(val) == 0 and len(test) == 5 and benzenes <= set(train.tolist())


def test_stratified_split_keeps_class_shares():
    rng = np.random.default_rng(0)
    Y = (rng.random((1000, 2)) < 0.15).astype(np.float32)
    Y[:40, 0] = np.nan                          # missing labels: a stratum of their own
    parts = stratified_split(Y, "classification", (0.8, 0.1, 0.1), seed=0)
    check_partition(parts, 1000)
    assert [len(p) for p in parts] == [800, 100, 100]
    share = np.nanmean(Y[:, 0])
    for p in parts:
        assert abs(np.nanmean(Y[p, 0]) - share) < 0.02
        assert abs(np.isnan(Y[p, 0]).mean() - 0.04) < 0.011
    assert same(parts, stratified_split(Y, "classification", (0.8, 0.1, 0.1), seed=0))
    assert not same(parts, stratified_split(Y, "classification", (0.8, 0.1, 0.1), seed=1))


def test_stratified_regression_by_quantile_bins():
    y = np.random.default_rng(1).normal(size=(500, 1))
    s = strata(y, "regression")
    assert set(s.tolist()) == set(range(10)) and np.bincount(s).min() == 50
    parts = stratified_split(y, "regression", (0.8, 0.1, 0.1), seed=0)
    check_partition(parts, 500)
    for p in parts[1:]:                          # every decile in every part
        assert np.bincount(s[p], minlength=10).min() >= 4


def test_kmeans_finds_separated_clusters():
    rng = np.random.default_rng(0)
    centres = np.array([[0, 0], [10, 0], [0, 10]], np.float32)
    X = np.concatenate([c + rng.normal(size=(50, 2)) for c in centres])
    label = kmeans(X, 3, seed=0)
    truth = np.repeat(np.arange(3), 50)
    assert all(len(set(label[truth == j].tolist())) == 1 for j in range(3))
    assert len(set(label.tolist())) == 3


def test_kmeans_split_keeps_clusters_whole(esol_smiles):
    smiles = esol_smiles[:300]
    parts = kmeans_split(smiles, (0.8, 0.1, 0.1), seed=0)
    check_partition(parts, 300)
    label = kmeans(morgan_bits(smiles), n_clusters(300), seed=0)     # the split's clusters
    assert len(set(label.tolist())) == n_clusters(300) == 30 and whole(parts, label)
    for p, f in zip(parts, (0.8, 0.1, 0.1)):
        assert abs(len(p) - f * 300) <= 0.05 * 300
    assert same(parts, kmeans_split(smiles, (0.8, 0.1, 0.1), seed=0))
    assert not same(parts, kmeans_split(smiles, (0.8, 0.1, 0.1), seed=1))


def test_split_from_column(tmp_path):
    path = tmp_path / "data.csv"
    path.write_text("smiles,y,part\nCCO,1,train\nCCC,2,Valid\nCCN,3, TEST \n"
                    "CCCC,4,validation\nCO,5,TRAIN\n")
    train, val, test = split_from_column(path, "Part", np.array([1, 2, 3, 4, 5]))
    assert train.tolist() == [0, 4] and val.tolist() == [1, 3] and test.tolist() == [2]
    assert train.dtype == np.int64
    # molecules rejected at build time have no row: indices are into the kept rows
    train, val, test = split_from_column(path, "part", np.array([1, 3, 5]))
    assert train.tolist() == [0, 2] and test.tolist() == [1] and val.tolist() == []
    path.write_text("smiles,y,part\nCCO,1,train\nCCC,2,hold-out\n")
    with pytest.raises(DataError, match=r"data.csv: row 2: split column 'part' holds "
                                        r"'hold-out'; it must be train, val or test"):
        split_from_column(path, "part", np.array([1, 2]))
    with pytest.raises(DataError, match="no split column 'fold'"):
        split_from_column(path, "fold", np.array([1, 2]))


def test_a_run_with_a_split_column_and_a_stratified_run(tmp_path):
    """``molpipe train`` end to end: the column's split is the run's (split.json, report,
    config.toml); a stratified classification run keeps each part's class share."""
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    rng = np.random.default_rng(0)
    alkyl = ["C" * k + tail for k in range(1, 11) for tail in ("O", "N", "Cl", "C(=O)O")]
    parts = ["train"] * 30 + ["val"] * 5 + ["test"] * 5
    rng.shuffle(parts)
    lines = ["smiles,y,label,part"] + [f"{s},{rng.normal():.3f},{int(i % 4 == 0)},{p}"
                                       for i, (s, p) in enumerate(zip(alkyl, parts))]
    data = tmp_path / "set.csv"
    data.write_text("\n".join(lines) + "\n")
    config = TrainConfig(data=str(data), targets=["y"], split_column="part", epochs=1,
                         hidden=8, cache_root=str(tmp_path / "cache"))
    report = train(config, tmp_path / "run")
    split = json.loads((tmp_path / "run" / "split.json").read_text())
    assert split["val"] == [i for i, p in enumerate(parts) if p == "val"]
    assert split["test"] == [i for i, p in enumerate(parts) if p == "test"]
    assert report["split"] == "column part"
    assert TrainConfig.from_file(tmp_path / "run" / "config.toml") == config

    config = TrainConfig(data=str(data), targets=["label"], split="stratified",
                         split_fractions=(0.5, 0.25, 0.25), epochs=1, hidden=8,
                         cache_root=str(tmp_path / "cache"))
    train(config, tmp_path / "strat")
    split = json.loads((tmp_path / "strat" / "split.json").read_text())
    positives = [sum(i % 4 == 0 for i in split[k]) for k in ("train", "val", "test")]
    assert positives[0] == 5 and sorted(positives[1:]) == [2, 3]      # 10 of 40: a quarter
