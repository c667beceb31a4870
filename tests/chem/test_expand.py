"""Codes expanded and packed: bit for bit instance.pack of featurize_reference's graphs."""

import numpy as np

from molpipe.chem.batch import featurize_batch
from molpipe.chem.expand import compact_offsets, pack_arrays
from molpipe.chem.featurize import featurize_reference
from molpipe.data.instance import pack

from .test_unpickle import HOSTILE


def test_pack_codes_equals_packing_reference_graphs():
    codes, kept, _ = featurize_batch(HOSTILE)
    arrays = codes.arrays()
    off = compact_offsets(codes)
    rng = np.random.default_rng(0)
    for rows in (np.arange(len(kept)), rng.permutation(len(kept))[:17], np.array([3, 3, 0])):
        got = pack_arrays(rows, off, arrays, codes.n_rounds)
        graphs = [featurize_reference(HOSTILE[kept[r]]) for r in rows]
        want = pack(graphs, np.zeros((len(rows), 0), np.float32))
        for name, x in zip(("V", "E", "src", "dst", "etype", "atom_mol", "atom_rounds",
                            "ring_atoms", "ring_offsets"), got):
            y = getattr(want, name)
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), name
