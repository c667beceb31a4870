"""The applicability domain of a model: how like its training molecules a new molecule is.

A model directory keeps ``domain.npz`` (plain arrays, never pickled): the Morgan fingerprints
(radius 2, 2,048 bits, packed) of up to ``MAX_REFERENCE`` training molecules, the elements
and the range of heavy-atom counts seen in training. ``Domain.check`` gives each new
molecule its nearest training neighbour's Tanimoto similarity and, where it lies outside the
domain, the reasons: a similarity below ``SIMILAR``, an element never seen in training, a
size outside the training range. Predictions are still made; the reasons say how far to
trust them.
"""

from __future__ import annotations

import functools
from pathlib import Path

import numpy as np
from numba import njit

FILE = "domain.npz"
FP_BITS = 2048
RADIUS = 2
MAX_REFERENCE = 20_000       # training molecules kept (a seeded sample beyond that)
SIMILAR = 0.3                # nearest-neighbour Tanimoto below this: unlike the training set
MAX_BYTES = 64 << 20         # a domain.npz larger than this is refused
_WORDS = FP_BITS // 64
BLOCK = 1000                 # SMILES parsed at a time (20,000 Mols at once took 400 MB)


def fingerprints(mols) -> np.ndarray:
    """(n, FP_BITS / 64) uint64 packed Morgan fingerprints of RDKit Mols (zeros for None or
    a molecule that cannot be fingerprinted: similarity 0, so it is flagged); bit ``b`` is
    bit ``b % 64`` of word ``b // 64``."""
    from rdkit import DataStructs
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=FP_BITS)
    empty = bytes(FP_BITS // 8)
    blobs = []
    for mol in mols:
        blob = empty
        if mol is not None:
            try:                                # the bit vector's raw bytes, little-endian
                blob = DataStructs.BitVectToBinaryText(gen.GetFingerprint(mol))
            except Exception:                   # a molecule RDKit cannot fingerprint: empty
                pass
        blobs.append(blob)
    out = np.frombuffer(b"".join(blobs), "<u8").reshape(len(blobs), _WORDS)
    return out.copy()


@njit(cache=True, nogil=True)
def _popcount(x):
    x = x - ((x >> np.uint64(1)) & np.uint64(0x5555555555555555))
    x = (x & np.uint64(0x3333333333333333)) + ((x >> np.uint64(2)) & np.uint64(0x3333333333333333))
    x = (x + (x >> np.uint64(4))) & np.uint64(0x0F0F0F0F0F0F0F0F)
    return (x * np.uint64(0x0101010101010101)) >> np.uint64(56)


@njit(cache=True, nogil=True)
def nearest_similarity(queries: np.ndarray, reference: np.ndarray) -> np.ndarray:
    """(n_queries,) float64: each query's highest Tanimoto similarity to a reference row
    (0 for an empty fingerprint or no reference)."""
    n_q, n_w = queries.shape
    n_r = reference.shape[0]
    ref_bits = np.zeros(n_r, np.int64)
    for r in range(n_r):
        for w in range(n_w):
            ref_bits[r] += _popcount(reference[r, w])
    out = np.zeros(n_q)
    for q in range(n_q):
        q_bits = 0
        for w in range(n_w):
            q_bits += _popcount(queries[q, w])
        if q_bits == 0:
            continue
        best = 0.0
        for r in range(n_r):
            inter = 0
            for w in range(n_w):
                inter += _popcount(queries[q, w] & reference[r, w])
            sim = inter / (q_bits + ref_bits[r] - inter)
            if sim > best:
                best = sim
        out[q] = best
    return out


@functools.cache
def _z_of_columns() -> np.ndarray:
    """The atomic number of every element column of V (-1: the "other" column)."""
    from rdkit.Chem import GetPeriodicTable

    from molpipe.chem.featurize import ELEMENTS

    table = GetPeriodicTable()
    return np.array([table.GetAtomicNumber(e) for e in ELEMENTS] + [-1])


def _reference_sample(n: int, seed: int = 0) -> np.ndarray | None:
    """Sorted positions of the seeded sample of MAX_REFERENCE that ``Domain.from_smiles``
    keeps of ``n`` training molecules (None: it keeps them all)."""
    if n <= MAX_REFERENCE:
        return None
    return np.sort(np.random.default_rng(seed).choice(n, MAX_REFERENCE, replace=False))


class Domain:
    """Training fingerprints, elements and heavy-atom range (``FILE``'s arrays)."""

    def __init__(self, fps: np.ndarray, elements: np.ndarray, heavy_atoms: np.ndarray):
        self.fps = np.ascontiguousarray(fps, np.uint64)
        self.elements = set(np.asarray(elements, np.int64).tolist())
        self.heavy_atoms = tuple(int(v) for v in heavy_atoms)

    @classmethod
    def from_smiles(cls, smiles, seed: int = 0, rows=None) -> "Domain":
        """The domain of the training SMILES ``smiles[rows]`` (``rows`` None: all of
        ``smiles``), a seeded sample of MAX_REFERENCE if there are more. ``smiles`` is any
        sequence (a store's lazy column): only the sampled molecules are read."""
        from rdkit import Chem, RDLogger

        rows = np.arange(len(smiles)) if rows is None else np.asarray(rows)
        keep = _reference_sample(len(rows), seed)
        smiles = [smiles[int(i)] for i in (rows if keep is None else rows[keep])]
        fps, elements, sizes = [], set(), []
        RDLogger.DisableLog("rdApp.*")
        try:
            for lo in range(0, len(smiles), BLOCK):     # a block of Mols at a time
                mols = [Chem.MolFromSmiles(s) for s in smiles[lo:lo + BLOCK]]
                mols = [m for m in mols if m is not None]
                elements |= {a.GetAtomicNum() for m in mols for a in m.GetAtoms()}
                sizes += [m.GetNumHeavyAtoms() for m in mols]
                fps.append(fingerprints(mols))
        finally:
            RDLogger.EnableLog("rdApp.*")
        sizes = sizes or [0]
        return cls(np.concatenate(fps) if fps else fingerprints([]),
                   np.array(sorted(elements), np.int64),
                   np.array([min(sizes), max(sizes)], np.int64))

    def arrays(self) -> dict[str, np.ndarray]:
        return {"fps": self.fps, "elements": np.array(sorted(self.elements), np.int64),
                "heavy_atoms": np.array(self.heavy_atoms, np.int64)}

    @classmethod
    def load(cls, path: str | Path) -> "Domain":
        """Read ``FILE`` without unpickling; ValueError naming the file if it is malformed."""
        from molpipe.io.safenpz import load_npz

        z = load_npz(path, MAX_BYTES)
        fps, elements, heavy = z.get("fps"), z.get("elements"), z.get("heavy_atoms")
        if (fps is None or fps.dtype != np.uint64 or fps.ndim != 2 or fps.shape[1] != _WORDS
                or elements is None or elements.dtype.kind != "i" or elements.ndim != 1
                or heavy is None or heavy.dtype.kind != "i" or heavy.shape != (2,)):
            raise ValueError(f"{path}: not a molpipe domain (fps, elements, heavy_atoms)")
        return cls(fps, elements, heavy)

    def check(self, mols, graphs=None) -> tuple[np.ndarray, list[str]]:
        """(similarity (n,) float64, NaN for a None; reasons: "" inside the domain, else why
        not) of RDKit Mols; ``graphs``: their MolGraphs (None where the Mol is None), whose
        element columns give each molecule's elements and heavy atoms without a walk over
        its atoms in Python."""
        from rdkit.Chem import GetPeriodicTable

        table = GetPeriodicTable()
        n = len(mols)
        sim = np.full(n, np.nan)
        ok = np.array([m is not None for m in mols], bool)
        if ok.any():
            sim[ok] = nearest_similarity(fingerprints([m for m in mols if m is not None]),
                                         self.fps)
        if graphs is None:
            unseen = [self._unseen(m) if m is not None else [] for m in mols]
            heavy = np.array([m.GetNumHeavyAtoms() if m is not None else 0 for m in mols])
        else:
            unseen, heavy = self._composition(mols, graphs)
        lo, hi = self.heavy_atoms
        outside = ok & ((sim < SIMILAR) | (heavy < lo) | (heavy > hi))
        reasons = [""] * n
        for i in np.flatnonzero(ok).tolist():
            if not (outside[i] or unseen[i]):
                continue
            why = []
            if sim[i] < SIMILAR:
                why.append(f"unlike the training set (similarity {sim[i]:.2f} < {SIMILAR})")
            if unseen[i]:
                names = ", ".join(table.GetElementSymbol(z) for z in unseen[i])
                why.append(f"element{'s' * (len(unseen[i]) > 1)} {names} not in training")
            if not lo <= heavy[i] <= hi:
                why.append(f"{heavy[i]} heavy atoms, training {lo}–{hi}")
            reasons[i] = "; ".join(why)
        return sim, reasons

    def _unseen(self, mol) -> list[int]:
        """The elements of an RDKit Mol not in training, sorted."""
        return sorted({a.GetAtomicNum() for a in mol.GetAtoms()} - self.elements)

    def _composition(self, mols, graphs) -> tuple[list[list[int]], np.ndarray]:
        """(each molecule's elements not in training, sorted; heavy atoms (n,)) from the
        element columns of the graphs' V, in whole-chunk numpy calls; a molecule with an
        element outside the featurizer's vocabulary (its "other" column) asks RDKit."""
        from molpipe.chem.featurize import ELEMENTS

        n, k = len(mols), len(ELEMENTS) + 1           # element one-hot: V[:, :k]
        z_of = _z_of_columns()
        atoms = [g.V.shape[0] if g is not None else 0 for g in graphs]
        V = [g.V[:, :k] for g in graphs if g is not None]
        col = np.argmax(np.concatenate(V), axis=1) if V else np.zeros(0, np.int64)
        mol = np.repeat(np.arange(n), atoms)
        present = np.zeros((n, k), bool)
        present[mol, col] = True
        heavy = np.asarray(atoms) - np.bincount(mol[col == ELEMENTS.index("H")], minlength=n)
        new = present & ~np.isin(z_of, sorted(self.elements))
        unseen: list[list[int]] = [[] for _ in range(n)]
        for i in np.flatnonzero(new.any(axis=1)).tolist():
            if new[i, k - 1]:                 # "other" (a dummy atom too): RDKit says
                unseen[i] = self._unseen(mols[i])
                heavy[i] = mols[i].GetNumHeavyAtoms()
            else:
                unseen[i] = sorted(z_of[new[i]].tolist())
        return unseen, heavy
