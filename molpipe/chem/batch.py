"""Featurizing fast: RDKit parses, ``Mol.ToBinary()`` pickles, one numba call decodes a whole
batch of pickles into compact codes (``molpipe.chem.unpickle``); the few molecules it does not
read are featurized with RDKit calls (``compact.compact_reference``)."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem import compact as C
from numba import njit

from molpipe.chem.expand import compact_graphs, compact_offsets, pack_codes
from molpipe.chem.featurize import MAX_ATOMS, check_rounds, molecule
from molpipe.chem.molgraph import MolGraph
from molpipe.chem.unpickle import OK, decode, decode_pickles


@njit(nogil=True, cache=True)
def graph_of_pickle(buf, min_rounds, max_rounds, bond_type_code, stereo_bits, atom_columns,
                    chiral_column, mass):
    """One pickle decoded and expanded in one call: (status, V, E, edge_index, edge_type,
    ring_atoms, ring_offsets, ring_system, fragment, n_rounds) as a MolGraph holds them."""
    starts = np.array([0, buf.shape[0]], np.int64)
    (status, atoms, fragment, bonds, bond_codes, ring_atoms, ring_sizes, ring_system, na, nb,
     nr, nq, n_rounds) = decode_pickles(buf, starts, min_rounds, max_rounds, bond_type_code,
                                        stereo_bits)
    rows = np.zeros(1, np.int64)
    V, E, src, dst, etype, _, _, ring_out, ring_off = pack_codes(
        rows, np.array([0, na[0]]), np.array([0, nb[0]]), np.array([0, nr[0]]),
        np.array([0, nq[0]]), atoms, bonds, bond_codes, ring_atoms, ring_sizes, n_rounds,
        atom_columns, chiral_column, mass)
    edge_index = np.empty((2, src.shape[0]), np.int32)
    edge_index[0] = src
    edge_index[1] = dst
    return (status[0], V, E, edge_index, etype, ring_out, ring_off,
            ring_system.astype(np.int32), fragment.astype(np.int32), n_rounds[0])


def featurize_one(smiles_or_mol: str | Chem.Mol, *, min_rounds: int = 2, max_rounds: int = 6,
                  max_atoms: int = MAX_ATOMS) -> MolGraph:
    """``featurize.featurize``: one molecule's MolGraph (FeaturizationError if it has none)."""
    check_rounds(min_rounds, max_rounds)
    mol = molecule(smiles_or_mol, max_atoms)
    out = graph_of_pickle(np.frombuffer(mol.ToBinary(), np.uint8), min_rounds, max_rounds,
                          C.BOND_TYPE_CODE, C.STEREO_BITS, C.ATOM_COLUMNS, C.CHIRAL_COLUMN,
                          C.MASS)
    if out[0] != OK:
        return compact_graphs(C.compact_reference(mol, min_rounds, max_rounds))[0]
    status, V, E, edge_index, edge_type, ring_atoms, ring_offsets, ring_system, fragment, \
        n_rounds = out
    return MolGraph(V=V, E=E, edge_index=edge_index, edge_type=edge_type, ring_atoms=ring_atoms,
                    ring_offsets=ring_offsets, ring_system=ring_system, fragment=fragment,
                    n_rounds=int(n_rounds), has_rings=ring_offsets.shape[0] > 1)


def featurize_batch(items, *, min_rounds: int = 2, max_rounds: int = 6,
                    max_atoms: int = MAX_ATOMS, on_item=None
                    ) -> tuple[C.Compact, list[int], list[tuple[int, str]]]:
    """Featurize SMILES strings and RDKit Mols (``items``) at once.

    Returns (the kept molecules' codes in order, their positions in ``items``, (position,
    reason) of every item that has no graph: the FeaturizationError's reason, or any other
    exception's message). ``on_item(position, item)``, if given, is called before each item
    is read (a test hook).
    """
    check_rounds(min_rounds, max_rounds)
    mols, pickles, kept, errors = [], [], [], []
    with rdBase.BlockLogs():                      # once for the batch, not per molecule
        for k, item in enumerate(items):
            if on_item is not None:
                on_item(k, item)
            try:
                mol = molecule(item, max_atoms, quiet=True)
                pickles.append(mol.ToBinary())
            except Exception as err:              # every item is kept or has its reason
                errors.append((k, str(err) or type(err).__name__))
                continue
            mols.append(mol)
            kept.append(k)
    status, codes = decode(pickles, min_rounds, max_rounds)
    if (status == OK).all():
        return codes, kept, errors
    return _with_fallbacks(codes, status, mols, kept, errors, min_rounds, max_rounds)


def _with_fallbacks(codes, status, mols, kept, errors, min_rounds, max_rounds):
    """Splice the reference codes of the molecules the decoder left out into ``codes``."""
    off = compact_offsets(codes)
    parts, still, done = [], [], 0
    run = 0                                        # decoded molecules not yet taken
    for k, st in enumerate(status.tolist()):
        if st == OK:
            run += 1
            still.append(kept[k])
            continue
        if run:
            parts.append(_take(codes, off, done, done + run))
            done, run = done + run, 0
        try:
            parts.append(C.compact_reference(mols[k], min_rounds, max_rounds))
            still.append(kept[k])
        except Exception as err:
            errors.append((kept[k], str(err) or type(err).__name__))
    if run:
        parts.append(_take(codes, off, done, done + run))
    errors.sort()
    return C.concat(parts), still, errors


def _take(c: C.Compact, off: dict, k0: int, k1: int) -> C.Compact:
    """Molecules ``k0:k1`` of ``c``."""
    a, b = off["atoms"][[k0, k1]], off["bonds"][[k0, k1]]
    r, q = off["rings"][[k0, k1]], off["ring_atoms"][[k0, k1]]
    return C.Compact(
        atoms=c.atoms[a[0]:a[1]], fragment=c.fragment[a[0]:a[1]], bonds=c.bonds[b[0]:b[1]],
        bond_codes=c.bond_codes[b[0]:b[1]], ring_atoms=c.ring_atoms[q[0]:q[1]],
        ring_sizes=c.ring_sizes[r[0]:r[1]], ring_system=c.ring_system[r[0]:r[1]],
        n_atoms=c.n_atoms[k0:k1], n_bonds=c.n_bonds[k0:k1], n_rings=c.n_rings[k0:k1],
        n_ring_atoms=c.n_ring_atoms[k0:k1], n_rounds=c.n_rounds[k0:k1],
        has_rings=c.has_rings[k0:k1])


