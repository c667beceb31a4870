"""Compact codes -> one-hot features: molecules of a store (or of a featurized batch) expanded
and packed into one Instance's arrays in one numba call, bit for bit what ``featurize_reference``
and ``instance.pack`` make."""

from __future__ import annotations

import numpy as np
from numba import njit

from molpipe.chem import compact as C
from molpipe.chem import featurize as F
from molpipe.chem.molgraph import BOND_TYPES, MolGraph

_ATOM_DIM, _BOND_DIM = F.ATOM_DIM, F.BOND_DIM
_AROMATIC, _IN_RING, _RING_SIZE0, _MASS = F._AROMATIC, F._IN_RING, F._RING_SIZE0, F._MASS
_N_TYPES = len(BOND_TYPES)
_CONJ, _RING, _STEREO, _ZL, _EL = (F._CONJUGATED, F._BOND_IN_RING, F._STEREO, F._Z_LIKE,
                                   F._E_LIKE)
_N_SIZES = len(F.RING_SIZES)


@njit(nogil=True, cache=True)
def pack_codes(rows, atom_offsets, bond_offsets, ring_offsets, ring_atom_offsets, atoms, bonds,
               bond_codes, ring_atoms, ring_sizes, n_rounds, atom_columns, chiral_column, mass):
    """The molecules ``rows`` (indices into the per-molecule offsets: molecule i owns atoms
    ``atom_offsets[i]:atom_offsets[i + 1]``, ...) expanded and concatenated, in that order.

    Returns V (A, ATOM_DIM) f4, E (2B, BOND_DIM) f4, src, dst, etype (2B,) i4 (edges grouped by
    bond type within each molecule, both directions adjacent), atom_mol, atom_rounds (A,) i4,
    ring_atoms (Q,) i4 and ring_offsets (R + 1,) i4, with instance-wide atom indices.
    """
    n_a = n_b = n_q = n_r = 0
    for row in rows:
        n_a += atom_offsets[row + 1] - atom_offsets[row]
        n_b += bond_offsets[row + 1] - bond_offsets[row]
        n_q += ring_atom_offsets[row + 1] - ring_atom_offsets[row]
        n_r += ring_offsets[row + 1] - ring_offsets[row]
    V = np.zeros((n_a, _ATOM_DIM), np.float32)
    E = np.zeros((2 * n_b, _BOND_DIM), np.float32)
    src = np.empty(2 * n_b, np.int32)
    dst = np.empty(2 * n_b, np.int32)
    etype = np.empty(2 * n_b, np.int32)
    atom_mol = np.empty(n_a, np.int32)
    atom_rounds = np.empty(n_a, np.int32)
    ring_out = np.empty(n_q, np.int32)
    ring_off = np.zeros(n_r + 1, np.int32)
    a = e = q = r = 0
    for m in range(rows.shape[0]):
        row = rows[m]
        a0, a1 = atom_offsets[row], atom_offsets[row + 1]
        for i in range(a1 - a0):
            code = atoms[a0 + i]
            out = V[a + i]
            for c in range(5):
                out[atom_columns[c, code[c]]] = 1.0
            if code[C.FLAGS] & C.AROMATIC:
                out[_AROMATIC] = 1.0
            if code[C.FLAGS] & C.ATOM_IN_RING:
                out[_IN_RING] = 1.0
            for k in range(_N_SIZES):
                if (code[C.RING_BITS] >> k) & 1:
                    out[_RING_SIZE0 + k] = 1.0
            col = chiral_column[code[C.CHIRAL]]
            if col >= 0:
                out[col] = 1.0
            out[_MASS] = mass[code[C.Z]]
            atom_mol[a + i] = m
            atom_rounds[a + i] = n_rounds[row]
        b0, b1 = bond_offsets[row], bond_offsets[row + 1]
        for t in range(_N_TYPES):
            for k in range(b0, b1):
                code = bond_codes[k]
                if (code & C.TYPE_MASK) != t:
                    continue
                i, j = a + np.int32(bonds[k, 0]), a + np.int32(bonds[k, 1])
                src[e], dst[e], src[e + 1], dst[e + 1] = i, j, j, i
                etype[e] = etype[e + 1] = t
                for d in range(2):
                    E[e + d, t] = 1.0
                    if code & C.CONJUGATED:
                        E[e + d, _CONJ] = 1.0
                    if code & C.IN_RING:
                        E[e + d, _RING] = 1.0
                    if code & C.STEREO:
                        E[e + d, _STEREO] = 1.0
                    if code & C.Z_LIKE:
                        E[e + d, _ZL] = 1.0
                    if code & C.E_LIKE:
                        E[e + d, _EL] = 1.0
                e += 2
        q0 = ring_atom_offsets[row]
        for k in range(ring_offsets[row], ring_offsets[row + 1]):
            size = np.int32(ring_sizes[k])
            for t in range(size):
                ring_out[q + t] = a + np.int32(ring_atoms[q0 + t])
            q0 += size
            q += size
            ring_off[r + 1] = ring_off[r] + size
            r += 1
        a += a1 - a0
    return V, E, src, dst, etype, atom_mol, atom_rounds, ring_out, ring_off


def offsets(n: np.ndarray) -> np.ndarray:
    """(len(n) + 1,) int64 running sums of ``n`` from 0."""
    out = np.zeros(len(n) + 1, np.int64)
    np.cumsum(n, out=out[1:])
    return out


def pack_arrays(rows: np.ndarray, off: dict, arrays: dict, n_rounds: np.ndarray) -> tuple:
    """``pack_codes`` on named arrays: ``off`` has atoms, bonds, rings, ring_atoms offsets;
    ``arrays`` has atoms, bonds, bond_codes, ring_atoms, ring_sizes."""
    return pack_codes(np.asarray(rows, np.int64), off["atoms"], off["bonds"], off["rings"],
                      off["ring_atoms"], arrays["atoms"], arrays["bonds"], arrays["bond_codes"],
                      arrays["ring_atoms"], arrays["ring_sizes"], n_rounds,
                      C.ATOM_COLUMNS, C.CHIRAL_COLUMN, C.MASS)


def graph(row: int, off: dict, arrays: dict, n_rounds: np.ndarray, has_rings: np.ndarray
          ) -> MolGraph:
    """Molecule ``row`` as a MolGraph (``arrays`` also holds fragment and ring_system)."""
    V, E, src, dst, etype, _, _, ring_atoms, ring_offsets = pack_arrays(
        np.array([row]), off, arrays, n_rounds)
    a0, a1 = off["atoms"][row], off["atoms"][row + 1]
    r0, r1 = off["rings"][row], off["rings"][row + 1]
    return MolGraph(V=V, E=E, edge_index=np.stack([src, dst]), edge_type=etype,
                    ring_atoms=ring_atoms, ring_offsets=ring_offsets,
                    ring_system=np.asarray(arrays["ring_system"][r0:r1], np.int32),
                    fragment=np.asarray(arrays["fragment"][a0:a1], np.int32),
                    n_rounds=int(n_rounds[row]), has_rings=bool(has_rings[row]))


def compact_offsets(c: C.Compact) -> dict:
    """The per-molecule offsets of a Compact."""
    return {"atoms": offsets(c.n_atoms), "bonds": offsets(c.n_bonds),
            "rings": offsets(c.n_rings), "ring_atoms": offsets(c.n_ring_atoms)}


def compact_graphs(c: C.Compact) -> list[MolGraph]:
    """Every molecule of ``c`` as a MolGraph."""
    off, arrays = compact_offsets(c), c.arrays()
    return [graph(k, off, arrays, c.n_rounds, c.has_rings) for k in range(len(c))]
