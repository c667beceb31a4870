"""SMILES or RDKit molecule -> MolGraph: one-hot atom/bond features, rings, fragments, plan."""

from __future__ import annotations

import math

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem.molgraph import BOND_TYPES, MolGraph

#: bump whenever the features or the plan change: stores built by another version are rebuilt
FEATURIZER_VERSION = "1"

#: molecules with more heavy atoms than this are rejected (the distance matrix is n^2)
MAX_ATOMS = 500

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

# widths of the one-hot blocks of V, in order; then aromatic, in ring, ring sizes (multi-hot)
_BLOCKS = (len(ELEMENTS) + 1, len(DEGREES) + 1, len(CHARGES) + 1, len(HYDROGENS) + 1,
           len(HYBRIDIZATIONS) + 1)
_STARTS = np.cumsum((0,) + _BLOCKS[:-1])
_AROMATIC = int(sum(_BLOCKS))
_IN_RING = _AROMATIC + 1
_RING_SIZE0 = _IN_RING + 1
ATOM_DIM = _RING_SIZE0 + len(RING_SIZES)

#: E columns: bond type one-hot (BOND_TYPES order), conjugated, in ring, has E/Z stereo
BOND_DIM = len(BOND_TYPES) + 3

# lookup tables from RDKit integers to one-hot slots (the last slot of a block is "other")
_Z_CODE = np.full(128, len(ELEMENTS), dtype=np.int64)
_PT = Chem.GetPeriodicTable()
for _k, _sym in enumerate(ELEMENTS):
    _Z_CODE[_PT.GetAtomicNumber(_sym)] = _k
_HYB_CODE = np.full(32, len(HYBRIDIZATIONS), dtype=np.int64)
for _k, _h in enumerate(HYBRIDIZATIONS):
    _HYB_CODE[int(_h)] = _k
_BT = Chem.BondType
_BOND_CODE = {_BT.SINGLE: 0, _BT.DOUBLE: 1, _BT.TRIPLE: 2, _BT.AROMATIC: 3}  # others -> single
_STEREO_NONE = (Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY)
_FAR = 1e7   # GetDistanceMatrix puts 1e8 between atoms of different fragments

_SANITIZE_REASONS = {
    Chem.SanitizeFlags.SANITIZE_PROPERTIES: "bad valence",
    Chem.SanitizeFlags.SANITIZE_KEKULIZE: "cannot kekulize aromatic ring",
    Chem.SanitizeFlags.SANITIZE_SETAROMATICITY: "aromaticity perception failed",
    Chem.SanitizeFlags.SANITIZE_FINDRADICALS: "radical perception failed",
}


class FeaturizationError(ValueError):
    """A molecule that cannot become a MolGraph; ``str(err)`` is a short human reason."""


def parse_smiles(smiles: str) -> Chem.Mol:
    """Parse and sanitize ``smiles``, raising FeaturizationError with the reason it fails."""
    if not isinstance(smiles, str):
        raise FeaturizationError(f"not a SMILES string ({type(smiles).__name__})")
    smiles = smiles.strip()
    if not smiles:
        raise FeaturizationError("empty SMILES")
    with rdBase.BlockLogs():
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

    Parameters
    ----------
    smiles_or_mol : a SMILES string or an RDKit molecule (salts stay one graph).
    min_rounds, max_rounds : the plan's propagation rounds, ``ceil(diameter / 2)``, are
        clipped to this range.
    max_atoms : larger molecules are rejected.

    Raises
    ------
    FeaturizationError
        with a short reason ("unparsable SMILES", "bad valence", "no atoms", ...).
    """
    if min_rounds < 1 or max_rounds < min_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds}, {max_rounds}")
    if isinstance(smiles_or_mol, Chem.Mol):
        mol = smiles_or_mol
    else:
        mol = parse_smiles(smiles_or_mol)
    n = mol.GetNumAtoms()
    if n == 0:
        raise FeaturizationError("no atoms")
    if n > max_atoms:
        raise FeaturizationError(f"too many atoms ({n} > {max_atoms})")

    V = _atom_features(mol, n)
    E, edge_index, edge_type = _bond_features(mol)
    ring_atoms, ring_offsets, ring_system = _rings(mol, V)
    fragment, diameter = _fragments_and_diameter(mol)
    n_rounds = min(max(math.ceil(diameter / 2), min_rounds), max_rounds)
    return MolGraph(V=V, E=E, edge_index=edge_index, edge_type=edge_type,
                    ring_atoms=ring_atoms, ring_offsets=ring_offsets, ring_system=ring_system,
                    fragment=fragment, n_rounds=int(n_rounds), has_rings=len(ring_offsets) > 1)


def _atom_features(mol: Chem.Mol, n: int) -> np.ndarray:
    """(n_atoms, ATOM_DIM) float32 one-hot blocks, aromatic and ring bits (ring sizes later)."""
    atom = mol.GetAtomWithIdx
    flat = []
    for i in range(n):
        a = atom(i)
        flat += (a.GetAtomicNum(), a.GetDegree(), a.GetFormalCharge(), a.GetTotalNumHs(),
                 int(a.GetHybridization()), a.GetIsAromatic())
    raw = np.array(flat, dtype=np.int64).reshape(n, 6)
    codes = np.empty((n, 5), dtype=np.int64)
    codes[:, 0] = _Z_CODE[np.minimum(raw[:, 0], 127)]
    codes[:, 1] = np.minimum(raw[:, 1], len(DEGREES))
    q = raw[:, 2] - CHARGES[0]
    codes[:, 2] = np.where((q >= 0) & (q < len(CHARGES)), q, len(CHARGES))
    codes[:, 3] = np.minimum(raw[:, 3], len(HYDROGENS))
    codes[:, 4] = _HYB_CODE[np.minimum(raw[:, 4], 31)]
    V = np.zeros((n, ATOM_DIM), dtype=np.float32)
    rows = np.arange(n)
    for b in range(5):
        V[rows, _STARTS[b] + codes[:, b]] = 1.0
    V[:, _AROMATIC] = raw[:, 5]
    return V


def _bond_features(mol: Chem.Mol) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Directed edges (both directions), sorted by bond type: E, edge_index, edge_type."""
    m = mol.GetNumBonds()
    if m == 0:
        return (np.zeros((0, BOND_DIM), np.float32), np.zeros((2, 0), np.int32),
                np.zeros(0, np.int32))
    bond = mol.GetBondWithIdx
    flat = []
    for k in range(m):
        b = bond(k)
        flat += (b.GetBeginAtomIdx(), b.GetEndAtomIdx(), _BOND_CODE.get(b.GetBondType(), 0),
                 b.GetIsConjugated(), b.IsInRing(), b.GetStereo() not in _STEREO_NONE)
    raw = np.array(flat, dtype=np.int64).reshape(m, 6)
    order = np.argsort(raw[:, 2], kind="stable")
    raw = raw[np.repeat(order, 2)]              # every bond twice, i->j then j->i
    raw[1::2, :2] = raw[0::2, 1::-1]
    E = np.zeros((2 * m, BOND_DIM), dtype=np.float32)
    E[np.arange(2 * m), raw[:, 2]] = 1.0
    E[:, len(BOND_TYPES):] = raw[:, 3:6]
    return E, np.ascontiguousarray(raw[:, :2].T, dtype=np.int32), raw[:, 2].astype(np.int32)


def _rings(mol: Chem.Mol, V: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Symmetrized SSSR rings (atoms, offsets) and fused ring systems; sets V's ring bits."""
    rings = mol.GetRingInfo().AtomRings()
    if not rings:
        return np.zeros(0, np.int32), np.zeros(1, np.int32), np.zeros(0, np.int32)
    sizes = np.fromiter((len(r) for r in rings), dtype=np.int64, count=len(rings))
    ring_atoms = np.fromiter((i for r in rings for i in r), dtype=np.int32, count=int(sizes.sum()))
    member_size = np.repeat(sizes, sizes)
    V[ring_atoms, _IN_RING] = 1.0
    fits = (member_size >= RING_SIZES[0]) & (member_size <= RING_SIZES[-1])
    V[ring_atoms[fits], _RING_SIZE0 + member_size[fits] - RING_SIZES[0]] = 1.0
    ring_offsets = np.zeros(len(rings) + 1, dtype=np.int32)
    np.cumsum(sizes, out=ring_offsets[1:])
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
    roots = [root(r) for r in range(len(rings))]
    return np.unique(roots, return_inverse=True)[1].astype(np.int32)


def _fragments_and_diameter(mol: Chem.Mol) -> tuple[np.ndarray, int]:
    """(n_atoms,) int32 fragment ids and the largest topological distance in any fragment."""
    D = Chem.GetDistanceMatrix(mol)
    near = D < _FAR
    diameter = int(D[near].max())
    first = near.argmax(axis=1)                  # lowest atom index in the same fragment
    if not first.any():
        return np.zeros(len(first), np.int32), diameter
    fragment = np.unique(first, return_inverse=True)[1].astype(np.int32)
    return fragment, diameter
