"""Compact molecules: a few uint8 codes per atom and per bond, from which a MolGraph's one-hot
features are expanded bit for bit (``molpipe.chem.expand``); the graph store's layout.

Atom codes, (n_atoms, ATOM_CODES) uint8, one column each:

- ``Z`` atomic number; ``DEGREE`` bonded neighbours (clipped at 255); ``CHARGE`` formal charge
  as an int8 bit pattern; ``HS`` total hydrogens (clipped at 255); ``HYB`` and ``CHIRAL`` RDKit's
  hybridization and chiral tag enum values; ``FLAGS`` bit 0 aromatic, bit 1 in a ring;
  ``RING_BITS`` bit k: in a ring of ``RING_SIZES[k]`` atoms.

Bond codes, (n_bonds,) uint8, one per bond (not per direction), in RDKit's bond order: bits 0-1
the ``BOND_TYPES`` index, then ``CONJUGATED``, ``IN_RING``, ``STEREO`` (a double bond with E/Z
stereo), ``Z_LIKE`` (Z or cis), ``E_LIKE`` (E or trans).
"""

from __future__ import annotations

from dataclasses import dataclass, fields

import numpy as np
from rdkit import Chem

from molpipe.chem import featurize as F

Z, DEGREE, CHARGE, HS, HYB, CHIRAL, FLAGS, RING_BITS = range(8)
ATOM_CODES = 8
AROMATIC, ATOM_IN_RING = 1, 2                       # FLAGS bits
TYPE_MASK, CONJUGATED, IN_RING, STEREO, Z_LIKE, E_LIKE = 3, 4, 8, 16, 32, 64   # bond bits
#: the largest atom index the uint16 atom and ring arrays hold
MAX_INDEX = np.iinfo(np.uint16).max


def _tables() -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(5, 256) int16 V column of every Z, degree, charge, Hs and hybridization code;
    (256,) int16 V column of every chiral tag code (-1: none); (256,) float32 mass / 100."""
    cols = np.zeros((5, 256), np.int16)
    for v in range(256):
        q = v - 256 if v > 127 else v
        cols[0, v] = F._Z_COL.get(v, F._Z_OTHER)
        cols[1, v] = F._DEG0 + min(v, F._DEG_OTHER)
        cols[2, v] = F._Q_COL.get(q, F._Q_OTHER)
        cols[3, v] = F._H0 + min(v, F._H_OTHER)
        cols[4, v] = F._HYB_OTHER
    for h, c in F._HYB_COL.items():
        cols[4, int(h)] = c
    chiral = np.full(256, F._CHIRAL_OTHER, np.int16)
    chiral[int(F._NO_CHIRALITY)] = -1
    for t, c in F._CHIRAL_COL.items():
        chiral[int(t)] = c
    mass = np.zeros(256, np.float32)
    for z in range(119):
        mass[z] = F._MASS_OF(z)
    return cols, chiral, mass


ATOM_COLUMNS, CHIRAL_COLUMN, MASS = _tables()
#: bond type code of every RDKit BondType value (others: single, as the featurizer reads them)
BOND_TYPE_CODE = np.zeros(256, np.uint8)
for _t, _code in F._BOND_CODE.items():
    BOND_TYPE_CODE[int(_t)] = _code
#: bond code bits of every RDKit BondStereo value on a double bond
STEREO_BITS = np.zeros(256, np.uint8)
for _s in Chem.BondStereo.values.values():
    if _s not in F._STEREO_NONE:
        side = F._STEREO_SIDE.get(_s)
        STEREO_BITS[int(_s)] = STEREO | (Z_LIKE if side == F._Z_LIKE else
                                         E_LIKE if side == F._E_LIKE else 0)


#: Compact's per-atom, per-bond and per-ring fields
ARRAYS = ("atoms", "fragment", "bonds", "bond_codes", "ring_atoms", "ring_sizes", "ring_system")


@dataclass(frozen=True, eq=False)
class Compact:
    """Molecules as codes, concatenated; molecule k owns the k-th run of each per-atom,
    per-bond and per-ring array (the lengths are ``n_atoms[k]`` ...).

    Fields
    ------
    atoms : (n_atoms_total, ATOM_CODES) uint8 atom codes (module docstring)
    fragment : (n_atoms_total,) uint16 connected-component id of every atom
    bonds : (n_bonds_total, 2) uint16 begin and end atom of every bond (per molecule)
    bond_codes : (n_bonds_total,) uint8 bond codes
    ring_atoms : (n_ring_atoms_total,) uint16 atoms of every ring (RDKit's ring order)
    ring_sizes, ring_system : (n_rings_total,) uint16 atoms and fused-system id of every ring
    n_atoms, n_bonds, n_rings, n_ring_atoms : (n_mols,) int64 lengths of every molecule's runs
    n_rounds : (n_mols,) int32 and has_rings : (n_mols,) bool, every molecule's plan
    """

    atoms: np.ndarray
    fragment: np.ndarray
    bonds: np.ndarray
    bond_codes: np.ndarray
    ring_atoms: np.ndarray
    ring_sizes: np.ndarray
    ring_system: np.ndarray
    n_atoms: np.ndarray
    n_bonds: np.ndarray
    n_rings: np.ndarray
    n_ring_atoms: np.ndarray
    n_rounds: np.ndarray
    has_rings: np.ndarray

    def __len__(self) -> int:
        return self.n_atoms.shape[0]

    def arrays(self) -> dict[str, np.ndarray]:
        """The per-atom, per-bond and per-ring arrays by name (the store's file names)."""
        return {name: getattr(self, name) for name in ARRAYS}


def empty() -> Compact:
    """No molecules."""
    return Compact(np.zeros((0, ATOM_CODES), np.uint8), np.zeros(0, np.uint16),
                   np.zeros((0, 2), np.uint16), np.zeros(0, np.uint8), np.zeros(0, np.uint16),
                   np.zeros(0, np.uint16), np.zeros(0, np.uint16), *(np.zeros(0, np.int64),) * 4,
                   np.zeros(0, np.int32), np.zeros(0, bool))


def concat(parts: list[Compact]) -> Compact:
    """The molecules of ``parts``, in order."""
    parts = [p for p in parts if len(p)]
    if not parts:
        return empty()
    if len(parts) == 1:
        return parts[0]
    return Compact(**{f.name: np.concatenate([getattr(p, f.name) for p in parts])
                      for f in fields(Compact)})


def compact_reference(mol: Chem.Mol, min_rounds: int, max_rounds: int) -> Compact:
    """One sanitized molecule's codes from per-atom RDKit calls: the fallback of the pickle
    decoder (``molpipe.chem.unpickle``) for what it does not read (query atoms, ...)."""
    n = mol.GetNumAtoms()
    if n > MAX_INDEX:
        raise F.FeaturizationError(f"too many atoms ({n} > {MAX_INDEX})")
    ring_info = mol.GetRingInfo()
    rings = ring_info.AtomRings()
    D = Chem.GetDistanceMatrix(mol)
    degrees = (D == 1).sum(axis=1)
    atoms = np.zeros((n, ATOM_CODES), np.uint8)
    for i, a in enumerate(mol.GetAtoms()):
        atoms[i, Z] = a.GetAtomicNum()
        atoms[i, DEGREE] = min(int(degrees[i]), 255)
        atoms[i, CHARGE] = max(-128, min(a.GetFormalCharge(), 127)) & 0xFF
        atoms[i, HS] = min(a.GetTotalNumHs(), 255)
        atoms[i, HYB] = int(a.GetHybridization())
        atoms[i, CHIRAL] = int(a.GetChiralTag())
        atoms[i, FLAGS] = AROMATIC if a.GetIsAromatic() else 0
    lo, hi = F.RING_SIZES[0], F.RING_SIZES[-1]
    for ring in rings:
        for i in ring:
            atoms[i, FLAGS] |= ATOM_IN_RING
            if lo <= len(ring) <= hi:
                atoms[i, RING_BITS] |= 1 << (len(ring) - lo)
    in_ring = {b for ring in ring_info.BondRings() for b in ring}
    m = mol.GetNumBonds()
    bonds = np.zeros((m, 2), np.uint16)
    codes = np.zeros(m, np.uint8)
    for k, b in enumerate(mol.GetBonds()):
        bonds[k] = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        t = int(BOND_TYPE_CODE[int(b.GetBondType())])
        code = t | (CONJUGATED if b.GetIsConjugated() else 0) | (IN_RING if k in in_ring else 0)
        if t == F._DOUBLE:
            code |= int(STEREO_BITS[int(b.GetStereo())])
        codes[k] = code
    ring_atoms, ring_offsets, ring_system = F._rings(rings)
    fragment, diameter = F._fragments_and_diameter(D)
    n_rounds = min(max(-(-diameter // 2), min_rounds), max_rounds)
    one = lambda v: np.array([v], np.int64)
    return Compact(atoms=atoms, fragment=fragment.astype(np.uint16), bonds=bonds,
                   bond_codes=codes, ring_atoms=ring_atoms.astype(np.uint16),
                   ring_sizes=np.diff(ring_offsets).astype(np.uint16),
                   ring_system=ring_system.astype(np.uint16), n_atoms=one(n), n_bonds=one(m),
                   n_rings=one(len(rings)), n_ring_atoms=one(len(ring_atoms)),
                   n_rounds=np.array([n_rounds], np.int32),
                   has_rings=np.array([len(rings) > 0]))
