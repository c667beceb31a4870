"""Graph store: featurized molecules as memory-mapped ``.npy`` arrays, opened lazily.

A store directory (written by ``build_store``) holds, for n kept molecules:

- ``V.npy`` (n_atoms_total, atom_dim) f4, ``fragment.npy`` (n_atoms_total,) i4
- ``E.npy`` (n_edges_total, bond_dim) f4, ``edges.npy`` (n_edges_total, 2) i4 (src, dst),
  ``edge_type.npy`` (n_edges_total,) i4
- ``ring_atoms.npy`` i4, ``ring_sizes.npy`` (n_rings_total,) i4, ``ring_system.npy`` i4
- ``atom_offsets.npy``, ``edge_offsets.npy``, ``ring_offsets.npy`` (n + 1,) i8: molecule i
  owns atoms/edges/rings ``offsets[i]:offsets[i + 1]`` (atom indices are per molecule)
- ``targets.npy`` (n, n_targets) f4 NaN-masked, ``n_rounds.npy`` i4, ``has_rings.npy`` bool,
  ``source_row.npy`` i8 (1-based data row in the source), ``smiles.txt`` (one per line)
- ``meta.json`` (featurizer version, source path + sha256, columns, counts, rounds, dims;
  ``targets_not_numbers``: target cells that were not numbers, absent in older stores)
  and ``rejects.csv`` (row, smiles, reason)
"""

from __future__ import annotations

import copy
import hashlib
import json
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from molpipe.chem.featurize import FEATURIZER_VERSION
from molpipe.chem.molgraph import MolGraph
from molpipe.data.build import META, Progress, build_store, sha256_file
from molpipe.data.errors import DataError
from molpipe.data.instance import Instance, pack
from molpipe.data.readers import open_table
from molpipe.data.registry import resolve_source

__all__ = ["GraphStore", "build_store", "open_data", "default_cache_root"]


class GraphStore:
    """A built store directory; graphs are read from memory-mapped arrays on demand.

    Fields
    ------
    targets : (n, n_targets) float32, NaN where missing
    n_rounds : (n,) int32 every molecule's propagation rounds (its plan, without its graph)
    has_rings : (n,) bool whether every molecule visits the ring stage
    source_row : (n,) int64 1-based data row (or SDF record) in the source file
    smiles : list[str] of length n
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        load = lambda name, mmap=None: np.load(path / f"{name}.npy", mmap_mode=mmap,
                                               allow_pickle=False)
        for name in ("V", "fragment", "E", "edges", "edge_type", "ring_atoms", "ring_system"):
            setattr(self, f"_{name}", load(name, "r"))
        self._atom_offsets = load("atom_offsets")
        self._edge_offsets = load("edge_offsets")
        self._ring_offsets = load("ring_offsets")            # per molecule, into its rings
        sizes = load("ring_sizes")
        self._ring_atom_offsets = np.concatenate([[0], np.cumsum(sizes)]).astype(np.int64)
        self.targets = load("targets")
        self.n_rounds = load("n_rounds")
        self.has_rings = load("has_rings")
        self.source_row = load("source_row")

    @classmethod
    def open(cls, path: str | Path) -> "GraphStore":
        """Open the store directory ``path`` (built by ``build_store``)."""
        path = Path(path)
        if not (path / META).is_file():
            raise DataError(f"{path}: not a graph store (no {META}); "
                            "build one with `molpipe preprocess`")
        meta = json.loads((path / META).read_text(encoding="utf-8"))
        if meta.get("featurizer_version") != FEATURIZER_VERSION:
            raise DataError(f"{path}: built by featurizer version "
                            f"{meta.get('featurizer_version')}, this is {FEATURIZER_VERSION}; "
                            "rebuild it with `molpipe preprocess`")
        return cls(path, meta)

    def __len__(self) -> int:
        return self.n_rounds.shape[0]

    def __getitem__(self, i: int) -> MolGraph:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"molecule {i} out of range for a store of {n}")
        i %= n
        a0, a1 = self._atom_offsets[i:i + 2]
        e0, e1 = self._edge_offsets[i:i + 2]
        r0, r1 = self._ring_offsets[i:i + 2]
        ring_offsets = self._ring_atom_offsets[r0:r1 + 1]
        return MolGraph(
            V=np.array(self._V[a0:a1]),
            E=np.array(self._E[e0:e1]),
            edge_index=np.ascontiguousarray(self._edges[e0:e1].T),
            edge_type=np.array(self._edge_type[e0:e1]),
            ring_atoms=np.array(self._ring_atoms[ring_offsets[0]:ring_offsets[-1]]),
            ring_offsets=(ring_offsets - ring_offsets[0]).astype(np.int32),
            ring_system=np.array(self._ring_system[r0:r1]),
            fragment=np.array(self._fragment[a0:a1]),
            n_rounds=int(self.n_rounds[i]),
            has_rings=bool(self.has_rings[i]),
        )

    def graphs(self, indices: Sequence[int] | np.ndarray) -> list[MolGraph]:
        """The MolGraphs of ``indices``, in that order."""
        return [self[i] for i in indices]

    def pack(self, rows: Sequence[int] | np.ndarray) -> Instance:
        """The molecules of ``rows`` (in that order) packed into one Instance with their
        targets: ``pack(self.graphs(rows), self.targets[rows], rows=rows)``."""
        rows = np.asarray(rows, np.int64)
        return pack(self.graphs(rows), self.targets[rows], rows=rows)

    def with_targets(self, names: Sequence[str]) -> "GraphStore":
        """The same store, its targets restricted to (and ordered as) ``names``."""
        missing = [t for t in names if t not in self.target_names]
        if missing:
            raise DataError(f"{self.path}: no target {missing[0]!r}; the store has "
                            f"{', '.join(self.target_names) or 'no targets'}")
        view = copy.copy(self)
        view.targets = self.targets[:, [self.target_names.index(t) for t in names]]
        view.meta = {**self.meta, "targets": list(names)}
        return view

    @property
    def n_atoms(self) -> np.ndarray:
        """Heavy atoms of every molecule, (n,) int64."""
        return np.diff(self._atom_offsets).astype(np.int64)

    @property
    def target_names(self) -> list[str]:
        return list(self.meta["targets"])

    @property
    def targets_not_numbers(self) -> dict[str, dict]:
        """{target: {count, rows, values}} of source cells not numbers ({} for older stores)."""
        found = self.meta.get("targets_not_numbers") or {}
        return {t: found[t] for t in self.target_names if t in found}

    @property
    def atom_dim(self) -> int:
        return int(self.meta["atom_dim"])

    @property
    def bond_dim(self) -> int:
        return int(self.meta["bond_dim"])

    @cached_property
    def smiles(self) -> list[str]:
        return (self.path / "smiles.txt").read_text(encoding="utf-8").splitlines()

    def __repr__(self) -> str:
        return f"GraphStore({str(self.path)!r}, n={len(self)}, targets={self.target_names})"


def default_cache_root() -> Path:
    """``$MOLPIPE_CACHE``, else ``~/.cache/molpipe/stores``."""
    env = os.environ.get("MOLPIPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "molpipe" / "stores"


def open_data(data: str | Path, *, targets: Sequence[str] | None = None,
              smiles_column: str | None = None, cache_root: str | Path | None = None,
              progress: Progress | None = None, min_rounds: int = 2, max_rounds: int = 6,
              n_jobs: int = 2) -> GraphStore:
    """Open DATA: a bundled data set name, a CSV/SDF path, or a store directory.

    Names and files are featurized once into ``cache_root`` (keyed by the source's sha256,
    the featurizer version, the columns and the rounds settings) and reused afterwards.
    """
    path = Path(data)
    if path.is_dir():
        store = GraphStore.open(path)
        return store if targets is None else store.with_targets(targets)
    path, entry = resolve_source(data)
    if entry is not None:
        targets = entry.targets if targets is None else targets
        smiles_column = smiles_column or entry.smiles_column
    table = open_table(path, smiles_column=smiles_column, targets=targets)
    key = json.dumps({"sha256": sha256_file(path), "featurizer": FEATURIZER_VERSION,
                      "smiles_column": table.smiles_column, "targets": table.target_names,
                      "rounds": [min_rounds, max_rounds]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    out = root / f"{path.stem}-{digest}"
    if not (out / META).is_file():
        build_store(path, out, smiles_column=table.smiles_column,
                    targets=list(table.target_names), min_rounds=min_rounds,
                    max_rounds=max_rounds, n_jobs=n_jobs, progress=progress)
    return GraphStore.open(out)
