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
    a molecule that cannot be fingerprinted: similarity 0, so it is flagged)."""
    from rdkit.Chem import rdFingerprintGenerator

    gen = rdFingerprintGenerator.GetMorganGenerator(radius=RADIUS, fpSize=FP_BITS)
    out = np.zeros((len(mols), _WORDS), np.uint64)
    for i, mol in enumerate(mols):
        if mol is None:
            continue
        try:
            bits = gen.GetFingerprintAsNumPy(mol).astype(np.uint8)
        except Exception:                       # a molecule RDKit cannot fingerprint: empty
            continue
        out[i] = np.packbits(bits, bitorder="little").view(np.uint64)
    return out


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


def reference_sample(n: int, seed: int = 0) -> np.ndarray | None:
    """Sorted positions of the seeded sample of MAX_REFERENCE that ``Domain.from_smiles``
    keeps of ``n`` training molecules (None: it keeps them all), so that a caller reads
    only those SMILES."""
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
    def from_smiles(cls, smiles, seed: int = 0) -> "Domain":
        """The domain of training SMILES (a seeded sample of MAX_REFERENCE if there are more)."""
        from rdkit import Chem, RDLogger

        smiles = list(smiles)
        keep = reference_sample(len(smiles), seed)
        if keep is not None:
            smiles = [smiles[i] for i in keep]
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

    def check(self, mols) -> tuple[np.ndarray, list[str]]:
        """(similarity (n,) float64, NaN for a None; reasons: "" inside the domain, else why
        not) of RDKit Mols."""
        from rdkit.Chem import GetPeriodicTable

        table = GetPeriodicTable()
        sim = np.full(len(mols), np.nan)
        ok = [i for i, m in enumerate(mols) if m is not None]
        if ok:
            sim[ok] = nearest_similarity(fingerprints([mols[i] for i in ok]), self.fps)
        lo, hi = self.heavy_atoms
        reasons = [""] * len(mols)
        for i in ok:
            why = []
            if sim[i] < SIMILAR:
                why.append(f"unlike the training set (similarity {sim[i]:.2f} < {SIMILAR})")
            unseen = sorted({a.GetAtomicNum() for a in mols[i].GetAtoms()} - self.elements)
            if unseen:
                names = ", ".join(table.GetElementSymbol(z) for z in unseen)
                why.append(f"element{'s' * (len(unseen) > 1)} {names} not in training")
            n = mols[i].GetNumHeavyAtoms()
            if not lo <= n <= hi:
                why.append(f"{n} heavy atoms, training {lo}–{hi}")
            reasons[i] = "; ".join(why)
        return sim, reasons
