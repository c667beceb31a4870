"""Featurizing fast: RDKit parses, ``Mol.ToBinary()`` pickles, one numba call decodes a whole
batch of pickles into compact codes (``molpipe.chem.unpickle``); the few molecules it does not
read are featurized with RDKit calls (``compact.compact_reference``)."""

from __future__ import annotations

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem import compact as C
from molpipe.chem.expand import compact_graphs, compact_offsets
from molpipe.chem.featurize import MAX_ATOMS, check_rounds, molecule
from molpipe.chem.molgraph import MolGraph
from molpipe.chem.unpickle import OK, decode


def featurize_one(smiles_or_mol: str | Chem.Mol, *, min_rounds: int = 2, max_rounds: int = 6,
                  max_atoms: int = MAX_ATOMS) -> MolGraph:
    """``featurize.featurize``: one molecule's MolGraph (FeaturizationError if it has none)."""
    check_rounds(min_rounds, max_rounds)
    mol = molecule(smiles_or_mol, max_atoms)
    status, codes = decode([mol.ToBinary()], min_rounds, max_rounds)
    if status[0] != OK:
        codes = C.compact_reference(mol, min_rounds, max_rounds)
    return compact_graphs(codes)[0]


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


def as_arrays(c: C.Compact) -> dict[str, np.ndarray]:
    """The store's per-atom/bond/ring arrays of ``c``, by file name."""
    return {"atoms": c.atoms, "fragment": c.fragment, "bonds": c.bonds,
            "bond_codes": c.bond_codes, "ring_atoms": c.ring_atoms, "ring_sizes": c.ring_sizes,
            "ring_system": c.ring_system}
