"""SMILES or RDKit molecule -> MolGraph: one-hot atom/bond features, rings, fragments, plan."""

from __future__ import annotations

import contextlib
import itertools
import math
import re

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem.molgraph import BOND_TYPES, MolGraph

#: bump whenever the features or the plan change: stores built by another version are rebuilt.
#: Version 2 appended columns to version 1's (chirality, mass; bond Z/E): a version-1 model
#: reads the first ``V1_DIMS`` columns (``molpipe.inference.predict``).
FEATURIZER_VERSION = "2"

#: molecules with more heavy atoms than this are rejected (the distance matrix is n^2)
MAX_ATOMS = 500
#: longer SMILES than this many characters per allowed atom are rejected unparsed
SMILES_CHARS_PER_ATOM = 40

#: element vocabulary; anything else is "other" (the last slot)
ELEMENTS = ("H", "B", "C", "N", "O", "F", "Si", "P", "S", "Cl", "Se", "Br", "I",
            "Li", "Na", "K", "Mg", "Ca", "Al", "Fe", "Cu", "Zn", "Sn", "As", "Hg")
DEGREES = (0, 1, 2, 3, 4, 5)                 # + "6 or more"
CHARGES = (-2, -1, 0, 1, 2)                  # + "other"
HYDROGENS = (0, 1, 2, 3, 4)                  # + "5 or more"
HYBRIDIZATIONS = (Chem.HybridizationType.S, Chem.HybridizationType.SP,
                  Chem.HybridizationType.SP2, Chem.HybridizationType.SP3,
                  Chem.HybridizationType.SP3D, Chem.HybridizationType.SP3D2)  # + "other"
RING_SIZES = (3, 4, 5, 6, 7, 8)

CHIRAL_TAGS = (Chem.ChiralType.CHI_TETRAHEDRAL_CW, Chem.ChiralType.CHI_TETRAHEDRAL_CCW)  # + other

# widths of the one-hot blocks of V, in order; then aromatic, in ring, ring sizes (multi-hot);
# then (version 2) the chiral tag (CW, CCW, another tag; none: all zero) and the mass / 100
_BLOCKS = (len(ELEMENTS) + 1, len(DEGREES) + 1, len(CHARGES) + 1, len(HYDROGENS) + 1,
           len(HYBRIDIZATIONS) + 1)
_STARTS = np.cumsum((0,) + _BLOCKS[:-1])
_AROMATIC = int(sum(_BLOCKS))
_IN_RING = _AROMATIC + 1
_RING_SIZE0 = _IN_RING + 1
_CHIRAL0 = _RING_SIZE0 + len(RING_SIZES)
_CHIRAL_COL = {t: _CHIRAL0 + k for k, t in enumerate(CHIRAL_TAGS)}
_CHIRAL_OTHER = _CHIRAL0 + len(CHIRAL_TAGS)
_MASS = _CHIRAL_OTHER + 1
ATOM_DIM = _MASS + 1

#: E columns: bond type one-hot (BOND_TYPES order), conjugated, in ring, has E/Z stereo;
#: then (version 2) Z (or cis), E (or trans)
BOND_DIM = len(BOND_TYPES) + 5
#: (atom, bond) feature widths of version 1: the first columns of version 2's
V1_DIMS = (_CHIRAL0, len(BOND_TYPES) + 3)

# column of every one-hot value in V (the last column of a block is "other")
_Z_COL = {Chem.GetPeriodicTable().GetAtomicNumber(e): k for k, e in enumerate(ELEMENTS)}
_Z_OTHER = len(ELEMENTS)
_DEG0, _DEG_OTHER = int(_STARTS[1]), len(DEGREES)
_Q_COL = {q: int(_STARTS[2]) + k for k, q in enumerate(CHARGES)}
_Q_OTHER = int(_STARTS[2]) + len(CHARGES)
_H0, _H_OTHER = int(_STARTS[3]), len(HYDROGENS)
_HYB_COL = {h: int(_STARTS[4]) + k for k, h in enumerate(HYBRIDIZATIONS)}
_HYB_OTHER = int(_STARTS[4]) + len(HYBRIDIZATIONS)
_BT = Chem.BondType
_BOND_CODE = {_BT.SINGLE: 0, _BT.DOUBLE: 1, _BT.TRIPLE: 2, _BT.AROMATIC: 3}  # others -> single
_DOUBLE = BOND_TYPES.index("double")
_CONJUGATED, _BOND_IN_RING, _STEREO = len(BOND_TYPES), len(BOND_TYPES) + 1, len(BOND_TYPES) + 2
_STEREO_NONE = (Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY)
_Z_LIKE, _E_LIKE = _STEREO + 1, _STEREO + 2
_STEREO_SIDE = {Chem.BondStereo.STEREOZ: _Z_LIKE, Chem.BondStereo.STEREOCIS: _Z_LIKE,
                Chem.BondStereo.STEREOE: _E_LIKE, Chem.BondStereo.STEREOTRANS: _E_LIKE}
_NO_CHIRALITY = Chem.ChiralType.CHI_UNSPECIFIED


def _MASS_OF(z: int, _table=Chem.GetPeriodicTable()) -> float:
    """The element's standard atomic weight / 100 (isotope labels are ignored)."""
    return 0.01 * _table.GetAtomicWeight(z)
_INNER_SPACE = re.compile(r"\s")
_FAR = 1e7   # GetDistanceMatrix puts 1e8 between atoms of different fragments

_SANITIZE_REASONS = {
    Chem.SanitizeFlags.SANITIZE_PROPERTIES: "bad valence",
    Chem.SanitizeFlags.SANITIZE_KEKULIZE: "cannot kekulize aromatic ring",
    Chem.SanitizeFlags.SANITIZE_SETAROMATICITY: "aromaticity perception failed",
    Chem.SanitizeFlags.SANITIZE_FINDRADICALS: "radical perception failed",
}


class FeaturizationError(ValueError):
    """A molecule that cannot become a MolGraph; ``str(err)`` is a short human reason."""


def parse_smiles(smiles: str, *, max_atoms: int = MAX_ATOMS, quiet: bool = False) -> Chem.Mol:
    """Parse and sanitize ``smiles``, raising FeaturizationError with the reason it fails.

    SMILES is ASCII without inner whitespace: anything else is rejected, never half-read
    (RDKit reads ``"CCO C"`` as ethanol and drops the rest). Molecules with more than
    ``max_atoms`` heavy atoms are rejected before sanitization, which can take minutes on
    huge aromatic systems. RDKit's log is blocked while it parses, unless ``quiet`` says the
    caller already blocks it (``rdBase.BlockLogs``, a few µs, once for a batch).
    """
    if not isinstance(smiles, str):
        raise FeaturizationError(f"not a SMILES string ({type(smiles).__name__})")
    smiles = smiles.strip()
    if not smiles:
        raise FeaturizationError("empty SMILES")
    if not smiles.isascii():
        raise FeaturizationError("non-ASCII character in SMILES")
    if _INNER_SPACE.search(smiles):
        raise FeaturizationError("whitespace inside SMILES")
    if "\x00" in smiles:
        raise FeaturizationError("NUL byte in SMILES")
    if len(smiles) > SMILES_CHARS_PER_ATOM * max_atoms:     # parsing ring closures is O(n^2)
        raise FeaturizationError(f"SMILES too long ({len(smiles)} characters > "
                                 f"{SMILES_CHARS_PER_ATOM * max_atoms})")
    with (contextlib.nullcontext() if quiet else rdBase.BlockLogs()):
        if len(smiles) > max_atoms:          # might hold too many atoms: count them unsanitized
            raw = Chem.MolFromSmiles(smiles, sanitize=False)
            n = raw.GetNumHeavyAtoms() if raw is not None else 0
            if n > max_atoms:
                raise FeaturizationError(f"too many atoms ({n} > {max_atoms})")
        mol = Chem.MolFromSmiles(smiles)
        if mol is not None:
            return mol
        raw = Chem.MolFromSmiles(smiles, sanitize=False)
        if raw is None:
            raise FeaturizationError("unparsable SMILES")
        failed = Chem.SanitizeMol(raw, catchErrors=True)
    raise FeaturizationError(_SANITIZE_REASONS.get(failed, f"sanitization failed ({failed})"))


def featurize(smiles_or_mol: str | Chem.Mol, *, min_rounds: int = 2, max_rounds: int = 6,
              max_atoms: int = MAX_ATOMS) -> MolGraph:
    """Featurize one molecule (SMILES or sanitized RDKit Mol) into a MolGraph.

    The molecule's RDKit pickle is decoded by ``molpipe.chem.unpickle`` (the fast path of
    ``molpipe.chem.batch``); the result is bit for bit ``featurize_reference``'s.

    Parameters
    ----------
    smiles_or_mol : a SMILES string or an RDKit molecule (salts stay one graph); an
        unsanitized molecule is sanitized (a copy) or rejected.
    min_rounds, max_rounds : the plan's propagation rounds, ``ceil(diameter / 2)``, are
        clipped to this range.
    max_atoms : larger molecules are rejected.

    Raises
    ------
    FeaturizationError
        with a short reason ("unparsable SMILES", "bad valence", "no atoms", ...).
    """
    from molpipe.chem.batch import featurize_one      # it builds on this module

    return featurize_one(smiles_or_mol, min_rounds=min_rounds, max_rounds=max_rounds,
                         max_atoms=max_atoms)


def check_rounds(min_rounds: int, max_rounds: int) -> None:
    if min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}")


def molecule(smiles_or_mol: str | Chem.Mol, max_atoms: int = MAX_ATOMS,
             quiet: bool = False) -> Chem.Mol:
    """The sanitized molecule of a SMILES or Mol with 1 to ``max_atoms`` atoms, else
    FeaturizationError with the reason (``quiet``: RDKit's log is blocked by the caller)."""
    if isinstance(smiles_or_mol, Chem.Mol):
        mol = smiles_or_mol
    else:
        mol = parse_smiles(smiles_or_mol, max_atoms=max_atoms, quiet=quiet)
    n = mol.GetNumAtoms()
    if n == 0:
        raise FeaturizationError("no atoms")
    if n > max_atoms:
        raise FeaturizationError(f"too many atoms ({n} > {max_atoms})")
    return mol if isinstance(smiles_or_mol, str) else _sanitized(mol)


def featurize_reference(smiles_or_mol: str | Chem.Mol, *, min_rounds: int = 2,
                        max_rounds: int = 6, max_atoms: int = MAX_ATOMS) -> MolGraph:
    """``featurize`` with one RDKit call per atom and bond and the distance matrix: the
    reference the fast path is tested against."""
    check_rounds(min_rounds, max_rounds)
    mol = molecule(smiles_or_mol, max_atoms)
    ring_info = mol.GetRingInfo()
    rings = ring_info.AtomRings()
    D = Chem.GetDistanceMatrix(mol)
    V = _atom_features(mol, (D == 1).sum(axis=1).tolist(), rings)
    E, edge_index, edge_type = _bond_features(mol, ring_info.BondRings())
    ring_atoms, ring_offsets, ring_system = _rings(rings)
    fragment, diameter = _fragments_and_diameter(D)
    n_rounds = min(max(math.ceil(diameter / 2), min_rounds), max_rounds)
    return MolGraph(V=V, E=E, edge_index=edge_index, edge_type=edge_type,
                    ring_atoms=ring_atoms, ring_offsets=ring_offsets, ring_system=ring_system,
                    fragment=fragment, n_rounds=int(n_rounds), has_rings=len(ring_offsets) > 1)


def _sanitized(mol: Chem.Mol) -> Chem.Mol:
    """``mol`` if it is sanitized, else a sanitized copy (RDKit raises on unsanitized Mols)."""
    if not mol.NeedsUpdatePropertyCache():
        try:
            with rdBase.BlockLogs():
                mol.GetRingInfo().NumRings()
            return mol
        except RuntimeError:                     # "RingInfo not initialized"
            pass
    mol = Chem.Mol(mol)
    with rdBase.BlockLogs():
        failed = Chem.SanitizeMol(mol, catchErrors=True)
    if failed != Chem.SanitizeFlags.SANITIZE_NONE:
        raise FeaturizationError(_SANITIZE_REASONS.get(failed, f"sanitization failed ({failed})"))
    return mol


def _atom_features(mol: Chem.Mol, degrees: list[int],
                   rings: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """(n_atoms, ATOM_DIM) float32: one-hot blocks, aromatic, in ring, ring sizes (multi-hot),
    chiral tag, mass / 100.

    ``degrees`` (heavy-atom neighbours of every atom) come from the distance matrix.
    """
    atom = mol.GetAtomWithIdx
    n = len(degrees)
    on = []                                     # flat indices of the ones in V
    for i, d in enumerate(degrees):
        a = atom(i)
        base = i * ATOM_DIM
        h = a.GetTotalNumHs()
        on += (base + _Z_COL.get(a.GetAtomicNum(), _Z_OTHER),
               base + _DEG0 + (d if d < _DEG_OTHER else _DEG_OTHER),
               base + _Q_COL.get(a.GetFormalCharge(), _Q_OTHER),
               base + _H0 + (h if h < _H_OTHER else _H_OTHER),
               base + _HYB_COL.get(a.GetHybridization(), _HYB_OTHER))
        if a.GetIsAromatic():
            on.append(base + _AROMATIC)
        tag = a.GetChiralTag()
        if tag != _NO_CHIRALITY:
            on.append(base + _CHIRAL_COL.get(tag, _CHIRAL_OTHER))
    for ring in rings:
        size_col = _RING_SIZE0 + len(ring) - RING_SIZES[0]
        sized = RING_SIZES[0] <= len(ring) <= RING_SIZES[-1]
        for i in ring:
            on.append(i * ATOM_DIM + _IN_RING)
            if sized:
                on.append(i * ATOM_DIM + size_col)
    V = np.zeros(n * ATOM_DIM, dtype=np.float32)
    V[on] = 1.0
    V = V.reshape(n, ATOM_DIM)
    V[:, _MASS] = [_MASS_OF(atom(i).GetAtomicNum()) for i in range(n)]
    return V


def _bond_features(mol: Chem.Mol, bond_rings: tuple[tuple[int, ...], ...]
                   ) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (both directions), grouped by bond type: E, edge_index, edge_type."""
    m = mol.GetNumBonds()
    if m == 0:
        return (np.zeros((0, BOND_DIM), np.float32), np.zeros((2, 0), np.int32),
                np.zeros(0, np.int32))
    bond = mol.GetBondWithIdx
    in_ring = set(itertools.chain.from_iterable(bond_rings))
    by_type: tuple[list, ...] = tuple([] for _ in BOND_TYPES)
    for k in range(m):
        b = bond(k)
        by_type[_BOND_CODE.get(b.GetBondType(), 0)].append((k, b))
    src, dst, etype, on = [], [], [], []
    base = 0
    for t, bonds in enumerate(by_type):
        for k, b in bonds:
            i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
            src += (i, j)
            dst += (j, i)
            etype += (t, t)
            cols = [t]
            if b.GetIsConjugated():
                cols.append(_CONJUGATED)
            if k in in_ring:
                cols.append(_BOND_IN_RING)
            if t == _DOUBLE and b.GetStereo() not in _STEREO_NONE:
                cols.append(_STEREO)
                side = _STEREO_SIDE.get(b.GetStereo())
                if side is not None:
                    cols.append(side)
            on += [base + c for c in cols]
            on += [base + BOND_DIM + c for c in cols]
            base += 2 * BOND_DIM
    E = np.zeros(2 * m * BOND_DIM, dtype=np.float32)
    E[on] = 1.0
    return (E.reshape(2 * m, BOND_DIM), np.array((src, dst), dtype=np.int32),
            np.array(etype, dtype=np.int32))


def _rings(rings: tuple[tuple[int, ...], ...]) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetrized SSSR rings as (ring_atoms, ring_offsets) and their fused ring systems."""
    if not rings:
        return np.zeros(0, np.int32), np.zeros(1, np.int32), np.zeros(0, np.int32)
    ring_atoms = np.fromiter(itertools.chain.from_iterable(rings), dtype=np.int32)
    ring_offsets = np.fromiter(itertools.accumulate((len(r) for r in rings), initial=0),
                               dtype=np.int32, count=len(rings) + 1)
    return ring_atoms, ring_offsets, _ring_systems(rings)


def _ring_systems(rings: tuple[tuple[int, ...], ...]) -> np.ndarray:
    """(n_rings,) int32 system id: rings sharing a bond (two or more atoms) are one system."""
    if len(rings) == 1:
        return np.zeros(1, np.int32)
    parent = list(range(len(rings)))

    def root(r: int) -> int:
        while parent[r] != r:
            r = parent[r]
        return r

    sets = [set(r) for r in rings]
    for a in range(len(rings)):
        for b in range(a + 1, len(rings)):
            if len(sets[a] & sets[b]) >= 2:
                parent[root(b)] = root(a)
    ids: dict[int, int] = {}
    return np.array([ids.setdefault(root(r), len(ids)) for r in range(len(rings))], np.int32)


def _fragments_and_diameter(D: np.ndarray) -> tuple[np.ndarray, int]:
    """(n_atoms,) int32 fragment ids and the largest topological distance in any fragment.

    ``D`` is RDKit's distance matrix: 1e8 between atoms of different fragments.
    """
    near = D < _FAR
    diameter = int(D[near].max())
    first = near.argmax(axis=1)                  # lowest atom index in the same fragment
    if not first.any():
        return np.zeros(len(first), np.int32), diameter
    fragment = np.unique(first, return_inverse=True)[1].astype(np.int32)
    return fragment, diameter
