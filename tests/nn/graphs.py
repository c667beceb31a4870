"""Hand-made MolGraphs and Instances for the network tests."""

import numpy as np

from molpipe.chem.molgraph import MolGraph
from molpipe.data.instance import pack

D_V, D_E = 5, 3


def make_graph(rng, n_atoms, bonds=(), rings=(), n_rounds=2, fragments=None):
    """A MolGraph with random features; ``bonds`` = [(i, j, bond_type)], both directions added."""
    src = [i for i, j, _ in bonds] + [j for i, j, _ in bonds]
    dst = [j for i, j, _ in bonds] + [i for i, j, _ in bonds]
    typ = [t for *_, t in bonds] * 2
    order = np.argsort(typ, kind="stable")
    n_edges = len(src)
    ring_atoms = np.array([a for r in rings for a in r], np.int32)
    return MolGraph(
        V=rng.normal(size=(n_atoms, D_V)).astype(np.float32),
        E=rng.normal(size=(n_edges, D_E)).astype(np.float32),
        edge_index=np.array([src, dst], np.int32).reshape(2, n_edges)[:, order],
        edge_type=np.array(typ, np.int32)[order],
        ring_atoms=ring_atoms,
        ring_offsets=np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int32),
        ring_system=np.zeros(len(rings), np.int32),
        fragment=np.zeros(n_atoms, np.int32) if fragments is None else np.array(fragments, np.int32),
        n_rounds=n_rounds,
        has_rings=len(rings) > 0,
    )


def benzene_like(rng, n_rounds=2):
    bonds = [(i, (i + 1) % 6, 3) for i in range(6)] + [(0, 6, 0), (6, 7, 1)]
    return make_graph(rng, 8, bonds, rings=[list(range(6))], n_rounds=n_rounds)


def naphthalene_like(rng, n_rounds=3):
    bonds = [(i, (i + 1) % 6, 3) for i in range(6)] + [(4, 6, 3), (6, 7, 3), (7, 8, 3),
                                                        (8, 9, 3), (9, 5, 3)]
    return make_graph(rng, 10, bonds, rings=[[0, 1, 2, 3, 4, 5], [4, 5, 9, 8, 7, 6]],
                      n_rounds=n_rounds)


def chain(rng, n_atoms=4, n_rounds=1):
    bonds = [(i, i + 1, i % 3) for i in range(n_atoms - 1)]
    return make_graph(rng, n_atoms, bonds, n_rounds=n_rounds)


def salt(rng, n_rounds=2):
    """Two fragments: a 3-atom ion with a double bond and a lone counter-ion."""
    return make_graph(rng, 4, [(0, 1, 0), (1, 2, 1)], n_rounds=n_rounds, fragments=[0, 0, 0, 1])


def one_atom(rng, n_rounds=2):
    return make_graph(rng, 1, n_rounds=n_rounds)


def instance(graphs, Y):
    return pack(graphs, np.asarray(Y, np.float32))
