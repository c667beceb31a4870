"""Train/validation/test splits: random, Bemis-Murcko scaffold, or read from a JSON file."""

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
    the rest are placed in a seeded random order, each into the first set it still fits.
    """
    n = len(smiles)
    n_train, n_val = _sizes(n, fractions)
    n_test = n - n_train - n_val
    groups: dict[str, list[int]] = defaultdict(list)
    for i, s in enumerate(smiles):
        groups[murcko_scaffold(s)].append(i)
    ordered = sorted(groups.values(), key=lambda g: g[0])        # deterministic base order
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
