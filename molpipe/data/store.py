"""Graph store: featurized molecules as compact memory-mapped ``.npy`` arrays, opened lazily.

A store directory (written by ``build_store``; ``STORE_FORMAT`` 2) holds, for n kept molecules,
the compact codes of ``molpipe.chem.compact``:

- ``atoms.npy`` (n_atoms_total, 8) u1 atom codes, ``fragment.npy`` (n_atoms_total,) u2
- ``bonds.npy`` (n_bonds_total, 2) u2 (begin, end; once per bond), ``bond_codes.npy`` u1
- ``ring_atoms.npy`` u2, ``ring_sizes.npy`` (n_rings_total,) u2, ``ring_system.npy`` u2
- ``atom_offsets.npy``, ``bond_offsets.npy``, ``ring_offsets.npy``, ``ring_atom_offsets.npy``
  (n + 1,) i8: molecule i owns atoms/bonds/rings/ring atoms ``offsets[i]:offsets[i + 1]``
  (atom indices are per molecule)
- ``targets.npy`` (n, n_targets) f4 NaN-masked, ``n_rounds.npy`` i4, ``has_rings.npy`` bool,
  ``source_row.npy`` i8 (1-based data row in the source), ``smiles.txt`` (one a line) and
  ``smiles_offsets.npy`` (n + 1,) i8 (byte offsets of the lines)
- ``meta.json`` (featurizer version, store format, source path + sha256, columns, counts,
  rounds, dims; ``targets_not_numbers``: target cells that were not numbers) and
  ``rejects.csv`` (row, smiles, reason)

Graphs (``store[i]``, ``graphs``) and packed instances (``pack``) are expanded from the codes
bit for bit as ``featurize`` makes them.
"""

from __future__ import annotations

import fcntl
import hashlib
import json
import mmap
import operator
import os
from collections.abc import Sequence
from functools import cached_property
from pathlib import Path

import numpy as np

from molpipe.chem.expand import graph, pack_arrays
from molpipe.chem.featurize import FEATURIZER_VERSION
from molpipe.chem.molgraph import MolGraph
from molpipe.data.build import META, Progress, build_store, sha256_file
from molpipe.data.errors import DataError
from molpipe.data.instance import Instance
from molpipe.data.readers import open_table
from molpipe.data.registry import resolve_source
from molpipe.data.writer import GRAPH_ARRAYS, OFFSETS, SMILES, STORE_FORMAT

__all__ = ["GraphStore", "build_store", "open_data", "default_cache_root"]


class SmilesColumn(Sequence):
    """The store's SMILES, read on demand from the memory-mapped ``smiles.txt``: a read-only
    sequence of str (index, slice, iterate, ``==`` a list)."""

    def __init__(self, path: Path, offsets: np.ndarray):
        self._offsets = offsets
        self._path = path
        self._text = b""
        if int(offsets[-1]):
            with open(path, "rb") as f:
                self._text = mmap.mmap(f.fileno(), 0, access=mmap.ACCESS_READ)

    def __reduce__(self):                     # pickled as its file, mapped again on arrival
        return SmilesColumn, (self._path, np.asarray(self._offsets))

    def __len__(self) -> int:
        return self._offsets.shape[0] - 1

    def head(self, n: int) -> "SmilesColumn":
        """The first ``n`` SMILES, as lazy as these."""
        return SmilesColumn(self._path, self._offsets[:n + 1])

    def __getitem__(self, i):
        if isinstance(i, slice):
            return [self[k] for k in range(*i.indices(len(self)))]
        if isinstance(i, (list, tuple, np.ndarray)):
            return [self[k] for k in np.asarray(i, np.int64).tolist()]
        n = len(self)
        i = operator.index(i)
        if not -n <= i < n:
            raise IndexError(f"SMILES {i} out of range for a store of {n}")
        i %= n
        a, b = self._offsets[i], self._offsets[i + 1]
        return self._text[int(a):int(b) - 1].decode("utf-8")

    def __iter__(self):
        ends = self._offsets
        text = self._text
        for k in range(len(self)):
            yield text[int(ends[k]):int(ends[k + 1]) - 1].decode("utf-8")

    def __eq__(self, other) -> bool:
        if isinstance(other, (Sequence, SmilesColumn)) and not isinstance(other, (str, bytes)):
            return len(self) == len(other) and all(a == b for a, b in zip(self, other))
        return NotImplemented

    def __repr__(self) -> str:
        return f"SmilesColumn({str(self._path)!r}, n={len(self)})"


class GraphStore:
    """A built store directory; graphs are expanded from memory-mapped codes on demand.

    Fields
    ------
    targets : (n, n_targets) float32, NaN where missing
    n_rounds : (n,) int32 every molecule's propagation rounds (its plan, without its graph)
    has_rings : (n,) bool whether every molecule visits the ring stage
    source_row : (n,) int64 1-based data row (or SDF record) in the source file
    smiles : a sequence of n str (``SmilesColumn``, read lazily)
    """

    def __init__(self, path: Path, meta: dict):
        self.path = path
        self.meta = meta
        load = lambda name, mmap_mode="r": np.load(path / f"{name}.npy", mmap_mode=mmap_mode,
                                                    allow_pickle=False)
        # plain ndarray views of the mapped files (numba takes those)
        mapped = {k: load(k) for k in (*GRAPH_ARRAYS, *OFFSETS)}
        #: the file mappings under them (``release_pages``)
        self._maps = [m.base for m in mapped.values() if isinstance(m.base, mmap.mmap)]
        self._arrays = {k: np.asarray(mapped[k]) for k in GRAPH_ARRAYS}
        self._offsets = {k: np.asarray(mapped[k]) for k in OFFSETS}
        self._off = {"atoms": self._offsets["atom_offsets"],
                     "bonds": self._offsets["bond_offsets"],
                     "rings": self._offsets["ring_offsets"],
                     "ring_atoms": self._offsets["ring_atom_offsets"]}
        self.targets = load("targets", None)
        self.n_rounds = load("n_rounds", None)
        self.has_rings = load("has_rings", None)
        self.source_row = load("source_row", None)

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
        if meta.get("store_format", 1) != STORE_FORMAT:
            raise DataError(f"{path}: a graph store of format {meta.get('store_format', 1)}, "
                            f"this molpipe reads format {STORE_FORMAT}; rebuild it with "
                            "`molpipe preprocess`")
        return cls(path, meta)

    def __reduce__(self):                    # pickled as its directory and targets, mapped
        return _reopen, (str(self.path), self.target_names)    # again on arrival

    def __len__(self) -> int:
        return self.n_rounds.shape[0]

    def __getitem__(self, i: int) -> MolGraph:
        n = len(self)
        i = int(i)
        if not -n <= i < n:
            raise IndexError(f"molecule {i} out of range for a store of {n}")
        return graph(i % n, self._off, self._arrays, self.n_rounds, self.has_rings)

    def graphs(self, indices: Sequence[int] | np.ndarray) -> list[MolGraph]:
        """The MolGraphs of ``indices``, in that order."""
        return [self[i] for i in indices]

    def pack(self, rows: Sequence[int] | np.ndarray) -> Instance:
        """The molecules of ``rows`` (in that order) packed into one Instance with their
        targets, in one numba call: bit for bit ``pack(self.graphs(rows), self.targets[rows],
        rows=rows)``."""
        given = np.asarray(rows, np.int64)
        n = len(self)
        if given.size == 0:
            raise ValueError("pack needs at least one molecule")
        if given.min() < -n or given.max() >= n:
            raise IndexError(f"rows out of range for a store of {n}")
        rows = given % n
        V, E, src, dst, etype, atom_mol, atom_rounds, ring_atoms, ring_offsets = pack_arrays(
            rows, self._off, self._arrays, self.n_rounds)
        return Instance(V=V, E=E, src=src, dst=dst, etype=etype, atom_mol=atom_mol,
                        atom_rounds=atom_rounds, ring_atoms=ring_atoms, ring_offsets=ring_offsets,
                        Y=np.ascontiguousarray(self.targets[rows], dtype=np.float32),
                        rows=given, n_rounds=int(self.n_rounds[rows].max()),
                        has_rings=bool(self.has_rings[rows].any()))

    def release_pages(self) -> None:
        """Drop the pages this process mapped from the store's files (they stay in the page
        cache, and a later read maps them again): pages read once per epoch would otherwise
        count in the process's RSS until the kernel needs them."""
        maps = list(self._maps)
        if "smiles" in self.__dict__ and isinstance(self.smiles._text, mmap.mmap):
            maps.append(self.smiles._text)
        _dont_need(maps)

    def with_targets(self, names: Sequence[str]) -> "GraphStore":
        """The same store, its targets restricted to (and ordered as) ``names``."""
        missing = [t for t in names if t not in self.target_names]
        if missing:
            raise DataError(f"{self.path}: no target {missing[0]!r}; the store has "
                            f"{', '.join(self.target_names) or 'no targets'}")
        view = object.__new__(GraphStore)             # a view: the same mappings
        view.__dict__.update(self.__dict__)
        view.targets = self.targets[:, [self.target_names.index(t) for t in names]]
        view.meta = {**self.meta, "targets": list(names)}
        return view

    @property
    def n_atoms(self) -> np.ndarray:
        """Heavy atoms of every molecule, (n,) int64."""
        return np.diff(self._off["atoms"]).astype(np.int64)

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
    def smiles(self) -> SmilesColumn:
        return SmilesColumn(self.path / SMILES, self._offsets["smiles_offsets"])

    def __repr__(self) -> str:
        return f"GraphStore({str(self.path)!r}, n={len(self)}, targets={self.target_names})"


def release_pages(store) -> None:
    """Drop the store's memory-mapped pages from this process (they stay in the page cache):
    pages read once per epoch would otherwise count in its RSS until the kernel needs them.

    A store with a ``release_pages()`` method does it itself; otherwise every read-only
    ``np.memmap`` it holds is advised MADV_DONTNEED (safe for a read-only file mapping: a
    later read faults the page back in from the cache).
    """
    own = getattr(store, "release_pages", None)
    if callable(own):
        own()
        return
    _dont_need(value._mmap for value in vars(store).values()
               if isinstance(value, np.memmap) and getattr(value, "_mmap", None) is not None
               and getattr(value, "mode", None) in ("r", "readonly"))


def _dont_need(maps) -> None:
    """Advise every mapping in ``maps`` MADV_DONTNEED where the platform has it; a mapping
    closed or not madvisable is left as it is (releasing pages is only a saving)."""
    if not hasattr(mmap, "MADV_DONTNEED"):
        return
    for m in maps:
        try:
            m.madvise(mmap.MADV_DONTNEED)
        except (OSError, ValueError):
            pass


def _reopen(path: str, targets: list[str]) -> GraphStore:
    return GraphStore.open(path).with_targets(targets)


def default_cache_root() -> Path:
    """``$MOLPIPE_CACHE``, else ``~/.cache/molpipe/stores``."""
    env = os.environ.get("MOLPIPE_CACHE")
    return Path(env) if env else Path.home() / ".cache" / "molpipe" / "stores"


def open_data(data: str | Path, *, targets: Sequence[str] | None = None,
              smiles_column: str | None = None, cache_root: str | Path | None = None,
              progress: Progress | None = None, min_rounds: int = 2, max_rounds: int = 6,
              n_jobs: int = 2) -> GraphStore:
    """Open DATA: a bundled data set name, a CSV/SMILES/SDF/Parquet path, or a store directory.

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
                      "store_format": STORE_FORMAT,
                      "smiles_column": table.smiles_column, "targets": table.target_names,
                      "rounds": [min_rounds, max_rounds]}, sort_keys=True)
    digest = hashlib.sha256(key.encode()).hexdigest()[:16]
    root = Path(cache_root) if cache_root is not None else default_cache_root()
    out = root / f"{path.stem}-{digest}"
    if not (out / META).is_file():
        root.mkdir(parents=True, exist_ok=True)
        with open(root / f".{out.name}.lock", "w") as lock:
            fcntl.flock(lock, fcntl.LOCK_EX)          # one build; the others wait and reuse it
            if not (out / META).is_file():
                build_store(path, out, smiles_column=table.smiles_column,
                            targets=list(table.target_names), min_rounds=min_rounds,
                            max_rounds=max_rounds, n_jobs=n_jobs, progress=progress)
                # whoever comes later finds the store (and those waiting look again)
                Path(lock.name).unlink(missing_ok=True)
    return GraphStore.open(out)
