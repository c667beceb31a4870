"""Train/validation/test splits: random, Bemis-Murcko scaffold (first-fit or balanced),
stratified by class, k-means clusters of Morgan fingerprints, or read from a JSON file.

Every split returns three sorted int64 index arrays that partition ``range(n)`` and depend
only on the inputs and the seed. The group splits (scaffolds, clusters) keep every group
whole in one part, so no scaffold or cluster is both trained on and tested on.
"""

from __future__ import annotations

import json
from collections import defaultdict
from pathlib import Path
from typing import Sequence

import numpy as np
from rdkit import Chem, rdBase
from rdkit.Chem.Scaffolds import MurckoScaffold

from molpipe.data.errors import DataError

Split = tuple[np.ndarray, np.ndarray, np.ndarray]
SPLIT_NAMES = ("train", "val", "test")
#: the splits ``--split`` names (anything else is a JSON file of row indices)
SPLITS = ("random", "scaffold", "scaffold-balanced", "stratified", "kmeans")
#: regression targets are stratified by this many quantile bins of the first target
QUANTILE_BINS = 10


def _sizes(n: int, fractions: Sequence[float]) -> tuple[int, int]:
    """Train and validation set sizes for ``n`` items (test takes the rest)."""
    f = np.asarray(fractions, dtype=np.float64)
    if f.shape != (3,) or (f < 0).any() or not np.isclose(f.sum(), 1.0):
        raise ValueError(f"fractions must be three non-negative numbers summing to 1, got {fractions}")
    n_train = int(round(f[0] * n))
    n_val = min(int(round(f[1] * n)), n - n_train)
    return n_train, n_val


def _sorted(*parts) -> Split:
    return tuple(np.sort(np.asarray(p, dtype=np.int64)) for p in parts)


def random_split(n: int, fractions: Sequence[float] = (0.8, 0.1, 0.1), seed: int = 0) -> Split:
    """Shuffle ``range(n)`` with ``seed`` and cut it: three sorted int64 index arrays."""
    n_train, n_val = _sizes(n, fractions)
    perm = np.random.default_rng(seed).permutation(n)
    return _sorted(perm[:n_train], perm[n_train:n_train + n_val], perm[n_train + n_val:])


def murcko_scaffold(smiles: str) -> str:
    """Bemis-Murcko scaffold SMILES ('' for acyclic molecules; the input if unparsable)."""
    with rdBase.BlockLogs():
        mol = Chem.MolFromSmiles(smiles)
        if mol is None:
            return smiles
        return MurckoScaffold.MurckoScaffoldSmiles(mol=mol, includeChirality=False)


def scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                   seed: int = 0) -> Split:
    """Scaffold split: every Bemis-Murcko scaffold group goes whole to one set.

    Groups too big for validation or test (more than half their size) go to train first;
    the rest are placed in a seeded random order, each into the first set it still fits
    (chemprop's ``scaffold_split(balanced=True)``; ``balanced_scaffold_split`` spreads them).
    """
    n = len(smiles)
    n_train, n_val = _sizes(n, fractions)
    n_test = n - n_train - n_val
    ordered = _scaffold_groups(smiles)                           # deterministic base order
    big = [g for g in ordered if len(g) > n_val / 2 or len(g) > n_test / 2]
    small = [g for g in ordered if not (len(g) > n_val / 2 or len(g) > n_test / 2)]
    rng = np.random.default_rng(seed)
    rng.shuffle(big)
    rng.shuffle(small)
    train, val, test = [], [], []
    for g in big + small:
        if len(train) + len(g) <= n_train:
            train += g
        elif len(val) + len(g) <= n_val:
            val += g
        else:
            test += g
    return _sorted(train, val, test)


def _scaffold_groups(smiles: Sequence[str]) -> list[list[int]]:
    """Row indices per Bemis-Murcko scaffold, in order of each group's first row."""
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s)].append(i)
    return sorted(groups.values(), key=lambda g: g[0])


def place_groups(groups: list[list[int]], n: int, fractions: Sequence[float],
                 seed: int) -> Split:
    """Whole groups to parts, balanced: each part gets its share of the big groups too.

    Groups larger than half of the validation or the test size (of those not empty) cannot
    go there without overshooting it: they go to train. The rest, in a seeded random order and then largest
    first (a stable sort: the seed orders groups of one size), each go to the part furthest
    below its target size in proportion to that size, so mid-size groups are spread over
    the three parts as the fractions say instead of train taking every one that fits
    (``scaffold_split``'s first fit), and sizes end close to their targets.
    """
    n_train, n_val = _sizes(n, fractions)
    target = np.array([n_train, n_val, n - n_train - n_val], np.float64)
    rng = np.random.default_rng(seed)
    order = [groups[i] for i in rng.permutation(len(groups))]
    order.sort(key=len, reverse=True)
    parts: list[list[int]] = [[], [], []]
    for g in order:
        if any(len(g) > t / 2 for t in target[1:] if t > 0):
            parts[0] += g
            continue
        filled = np.array([len(p) for p in parts], np.float64)
        room = np.where(target > 0, (target - filled) / np.maximum(target, 1), -np.inf)
        parts[int(np.argmax(room))] += g
    return _sorted(*parts)


def balanced_scaffold_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                            seed: int = 0) -> Split:
    """Scaffold split with every scaffold group whole and spread by ``place_groups``."""
    return place_groups(_scaffold_groups(smiles), len(smiles), fractions, seed)


def strata(Y: np.ndarray, task: str) -> np.ndarray:
    """Each row's stratum from the first target: its class (classification) or its quantile
    bin of ``QUANTILE_BINS`` (regression); a missing label is a stratum of its own (-1)."""
    y = np.asarray(Y, np.float64).reshape(len(Y), -1)[:, 0]
    known = np.isfinite(y)
    out = np.full(y.shape, -1, np.int64)
    if task == "classification":
        out[known] = y[known].astype(np.int64)
    elif known.any():
        edges = np.quantile(y[known], np.linspace(0, 1, QUANTILE_BINS + 1)[1:-1])
        out[known] = np.searchsorted(edges, y[known], side="right")
    return out


def stratified_split(Y: np.ndarray, task: str, fractions: Sequence[float] = (0.8, 0.1, 0.1),
                     seed: int = 0) -> Split:
    """Every stratum (``strata``) cut by ``fractions`` on its own, so each part keeps each
    class's (or bin's) share; the cuts are rounded so the totals are ``_sizes``' exactly."""
    s = strata(Y, task)
    n = len(s)
    n_train, n_val = _sizes(n, fractions)
    rng = np.random.default_rng(seed)
    labels, counts = np.unique(s, return_counts=True)
    # largest remainder: per stratum train and train+val counts that sum to the totals
    cuts = []
    for total in (n_train, n_train + n_val):
        exact = counts * (total / max(n, 1))
        base = np.floor(exact).astype(np.int64)
        extra = total - base.sum()
        base[np.argsort(-(exact - base), kind="stable")[:extra]] += 1
        cuts.append(base)
    train, val, test = [], [], []
    for label, c_train, c_tv in zip(labels, *cuts):
        rows = rng.permutation(np.flatnonzero(s == label))
        train += rows[:c_train].tolist()
        val += rows[c_train:c_tv].tolist()
        test += rows[c_tv:].tolist()
    return _sorted(train, val, test)


def morgan_bits(smiles: Sequence[str], radius: int = 2, n_bits: int = 1024) -> np.ndarray:
    """(n, n_bits) uint8 Morgan fingerprints (all zero for an unparsable SMILES)."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=radius, fpSize=n_bits)
    out = np.zeros((len(smiles), n_bits), np.uint8)
    with rdBase.BlockLogs():
        for i, s in enumerate(smiles):
            mol = Chem.MolFromSmiles(s)
            if mol is not None:
                out[i] = gen.GetFingerprintAsNumPy(mol)
    return out


def kmeans(X: np.ndarray, k: int, seed: int = 0, iterations: int = 50,
           chunk: int = 4096) -> np.ndarray:
    """Lloyd's k-means with k-means++ seeding: each row's cluster, (n,) int64.

    ``X`` stays as given (uint8 fingerprints: n bytes per bit); squared Euclidean distances
    ``|x|^2 - 2 x.c + |c|^2`` and the new centres are computed ``chunk`` rows at a time in
    float32, so the extra memory is flat in n. An emptied cluster restarts at the row
    furthest from its centre. Stops when no row changes cluster, or after ``iterations``.
    """
    n = X.shape[0]
    k = min(k, n)
    rng = np.random.default_rng(seed)
    blocks = [(lo, min(lo + chunk, n)) for lo in range(0, n, chunk)]
    if X.size <= (64 << 20):                       # up to 256 MB as float32: convert once
        X = np.asarray(X, np.float32)
    rows = lambda lo, hi: np.asarray(X[lo:hi], np.float32)
    x2 = np.concatenate([np.einsum("ij,ij->i", rows(lo, hi), rows(lo, hi)) for lo, hi in blocks])

    def nearest(C):
        c2 = np.einsum("ij,ij->i", C, C)
        label, d = np.empty(n, np.int64), np.empty(n, np.float32)
        for lo, hi in blocks:
            D = x2[lo:hi, None] - 2 * rows(lo, hi) @ C.T + c2[None]
            label[lo:hi] = D.argmin(axis=1)
            d[lo:hi] = np.maximum(D[np.arange(hi - lo), label[lo:hi]], 0)
        return label, d

    C = np.asarray(X[[rng.integers(n)]], np.float32)
    d = nearest(C)[1]
    for _ in range(1, k):                          # k-means++: far rows more likely
        p = d / d.sum() if d.sum() > 0 else np.full(n, 1.0 / n)
        C = np.vstack([C, np.asarray(X[[rng.choice(n, p=p)]], np.float32)])
        d = np.minimum(d, nearest(C[-1:])[1])
    label = np.full(n, -1, np.int64)
    for _ in range(iterations):
        new, d = nearest(C)
        if np.array_equal(new, label):
            break
        label = new
        counts = np.bincount(label, minlength=k)
        sums = np.zeros_like(C)
        for lo, hi in blocks:                      # a one-hot product sums each cluster
            onehot = np.zeros((k, hi - lo), np.float32)
            onehot[label[lo:hi], np.arange(hi - lo)] = 1.0
            sums += onehot @ rows(lo, hi)
        for j in np.flatnonzero(counts == 0):      # restart an empty cluster far away
            far = int(np.argmax(d))
            sums[j], counts[j], d[far] = rows(far, far + 1)[0], 1, 0.0
        C = sums / counts[:, None]
    return label


def n_clusters(n: int) -> int:
    """k for ``kmeans_split``: n / 10 clamped to 10..100. Clusters of about 10 molecules
    (or n / 100) are well under half of a 10 % part, so whole clusters fill validation and
    test near their sizes; 100 at most keeps them chemically coarse on a large set."""
    return int(min(100, max(10, n // 10)))


def kmeans_split(smiles: Sequence[str], fractions: Sequence[float] = (0.8, 0.1, 0.1),
                 seed: int = 0, k: int | None = None) -> Split:
    """Cluster split: k-means (seeded) on Morgan fingerprints, whole clusters to parts
    by ``place_groups`` (as the balanced scaffold split places scaffolds)."""
    n = len(smiles)
    if n == 0:
        return _sorted([], [], [])
    label = kmeans(morgan_bits(smiles), k or n_clusters(n), seed)
    groups = [np.flatnonzero(label == j).tolist() for j in np.unique(label)]
    return place_groups(groups, n, fractions, seed)


def split_from_file(path: str | Path) -> Split:
    """Read ``{"train": [...], "val": [...], "test": [...]}``: three sorted int64 arrays."""
    path = Path(path)
    try:
        data = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        raise DataError(f"{path}: no such split file; check the path") from None
    except (UnicodeDecodeError, json.JSONDecodeError) as err:
        raise DataError(f"{path}: not a JSON split file ({err})") from None
    if not isinstance(data, dict) or set(data) != set(SPLIT_NAMES):
        keys = sorted(data) if isinstance(data, dict) else type(data).__name__
        raise DataError(f"{path}: a split file needs exactly the keys train, val, test "
                        f"(found {keys})")
    parts = []
    for name in SPLIT_NAMES:
        values = data[name]
        if not isinstance(values, list) or not all(
                isinstance(v, int) and not isinstance(v, bool) and v >= 0 for v in values):
            raise DataError(f"{path}: {name!r} must be a list of non-negative integer indices")
        parts.append(values)
    out = _sorted(*parts)
    joined = np.concatenate(out)
    if np.unique(joined).size != joined.size:
        raise DataError(f"{path}: an index appears twice (within or across train/val/test)")
    return out


#: what a split column's cells may say (any case, spaces around ignored)
COLUMN_VALUES = {"train": 0, "val": 1, "valid": 1, "validation": 1, "test": 2}


def split_from_column(path: str | Path, column: str, rows: np.ndarray,
                      smiles_column: str | None = None) -> Split:
    """The split a CSV's ``column`` gives (train / val / test per row, any case; valid and
    validation read as val): indices into ``rows``, the 1-based data rows of the molecules
    (a store's ``source_row``). A cell that says anything else is a DataError naming the
    file, its row and the value; a molecule rejected when the store was built has no row
    in ``rows`` and its cell is not read."""
    from molpipe.data.readers import csv_rows, open_table
    from molpipe.data.text import match_name

    path = Path(path)
    table = open_table(path, smiles_column=smiles_column, targets=[])
    if table.kind != "csv":
        raise DataError(f"{path}: --split-column reads a CSV column; this is an SDF file "
                        "(give the split as --split FILE.json instead)")
    name = match_name(column, list(table.columns), path, "split column")
    c = table.columns.index(name)
    wanted = {int(r): i for i, r in enumerate(np.asarray(rows).tolist())}
    part = np.full(len(wanted), -1, np.int64)
    for row, fields, problem in csv_rows(table):
        i = wanted.get(row)
        if i is None or problem is not None:
            continue
        value = fields[c]
        code = COLUMN_VALUES.get(value.strip().lower())
        if code is None:
            raise DataError(f"{path}: row {row}: split column {name!r} holds {value!r}; "
                            "it must be train, val or test (valid, validation: val)")
        part[i] = code
    if (part < 0).any():
        row = np.asarray(rows)[np.flatnonzero(part < 0)[0]]
        raise DataError(f"{path}: row {row} of the data is not in the file any more; "
                        "was it changed after the store was built?")
    return _sorted(*(np.flatnonzero(part == k) for k in range(3)))
