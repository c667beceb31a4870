"""Packing molecules into instances and grouping them by plan."""

import numpy as np

from molpipe.chem.featurize import featurize
from molpipe.chem.molgraph import MolGraph
from molpipe.data.instance import ATOMS_PER_INSTANCE, auto_instance_size, group_by_plan, pack


def _chain(n_atoms: int, n_rounds: int, ring: bool) -> MolGraph:
    src = np.arange(n_atoms - 1, dtype=np.int32)
    ei = np.concatenate([np.stack([src, src + 1]), np.stack([src + 1, src])], axis=1)
    ring_atoms = np.arange(min(3, n_atoms), dtype=np.int32) if ring else np.zeros(0, np.int32)
    return MolGraph(
        V=np.full((n_atoms, 3), n_atoms, np.float32),
        E=np.ones((ei.shape[1], 2), np.float32),
        edge_index=ei.astype(np.int32),
        edge_type=np.zeros(ei.shape[1], np.int32),
        ring_atoms=ring_atoms,
        ring_offsets=np.array([0, ring_atoms.size] if ring else [0], np.int32),
        ring_system=np.zeros(1 if ring else 0, np.int32),
        fragment=np.zeros(n_atoms, np.int32),
        n_rounds=n_rounds,
        has_rings=ring,
    )


def test_pack_offsets_edges_and_rings():
    g = [_chain(4, 2, True), _chain(1, 3, False), _chain(3, 2, True)]
    inst = pack(g, np.array([[1.0], [np.nan], [3.0]]), rows=np.array([7, 8, 9]))
    assert inst.n_atoms == 8 and inst.n_mols == 3
    assert inst.atom_mol.tolist() == [0, 0, 0, 0, 1, 2, 2, 2]
    assert inst.atom_rounds.tolist() == [2, 2, 2, 2, 3, 2, 2, 2]
    # every edge stays inside its own molecule
    assert (inst.atom_mol[inst.src] == inst.atom_mol[inst.dst]).all()
    assert inst.src.max() == 7 and inst.src.dtype == np.int32
    assert inst.ring_atoms.tolist() == [0, 1, 2, 5, 6, 7]
    assert inst.ring_offsets.tolist() == [0, 3, 6]
    assert inst.n_rounds == 3 and inst.has_rings
    assert inst.rows.tolist() == [7, 8, 9]
    assert np.isnan(inst.Y[1, 0])


def test_pack_keeps_every_molecule_whole():
    """Every molecule's own atoms, bonds and rings come back out of the instance, shifted."""
    smiles = ["c1ccc2ccccc2c1", "CCO", "C1CC2(C1)CCC2", "[Na+].CC(=O)[O-]", "c1ccccc1-c1ccncc1",
              "C", "O=C1NC(=O)C2=C1C=CC=C2"]
    graphs = [featurize(s) for s in smiles]
    inst = pack(graphs, np.zeros((len(graphs), 1)))
    start = 0
    rings_before = 0
    for i, g in enumerate(graphs):
        atoms = np.flatnonzero(inst.atom_mol == i)
        assert atoms.tolist() == list(range(start, start + g.n_atoms))
        np.testing.assert_array_equal(inst.V[atoms], g.V)
        edges = np.flatnonzero(inst.atom_mol[inst.src] == i)
        np.testing.assert_array_equal(np.stack([inst.src[edges], inst.dst[edges]]) - start, g.edge_index)
        np.testing.assert_array_equal(inst.E[edges], g.E)
        np.testing.assert_array_equal(inst.etype[edges], g.edge_type)
        for r in range(g.n_rings):
            lo, hi = inst.ring_offsets[rings_before + r], inst.ring_offsets[rings_before + r + 1]
            own = g.ring_atoms[g.ring_offsets[r]:g.ring_offsets[r + 1]]
            assert (inst.ring_atoms[lo:hi] - start).tolist() == own.tolist()
        start += g.n_atoms
        rings_before += g.n_rings
    assert inst.ring_offsets.shape[0] == rings_before + 1 and inst.ring_offsets[-1] == inst.ring_atoms.size
    assert inst.n_rounds == max(g.n_rounds for g in graphs)
    assert inst.atom_rounds.tolist() == [g.n_rounds for g in graphs for _ in range(g.n_atoms)]


def test_group_by_plan_covers_everything_once_with_one_plan_per_group():
    rng = np.random.default_rng(0)
    rounds = rng.integers(2, 6, 101)
    rings = rng.random(101) < 0.5
    groups = group_by_plan(rounds, rings, 8, np.random.default_rng(1))
    allpos = np.concatenate(groups)
    assert sorted(allpos.tolist()) == list(range(101))
    assert all(len(g) <= 8 for g in groups)
    for g in groups:
        assert len(set(zip(rounds[g].tolist(), rings[g].tolist()))) == 1
    # evaluation order (no rng) is deterministic and still covers everything
    a = group_by_plan(rounds, rings, 8, None)
    b = group_by_plan(rounds, rings, 8, None)
    assert [x.tolist() for x in a] == [x.tolist() for x in b]
    unbucketed = group_by_plan(rounds, rings, 8, None, bucket=False)
    assert np.concatenate(unbucketed).tolist() == list(range(101))


def test_auto_instance_size_packs_small_molecules_by_atoms():
    assert auto_instance_size(np.full(900, 13)) == 16             # ESOL-sized: the minimum
    assert auto_instance_size(np.full(3400, 27)) == 16            # large molecules: still 16
    n = auto_instance_size(np.full(8000, 9))                      # QM9-sized: more of them
    assert n == ATOMS_PER_INSTANCE // 9 and n * 9 <= ATOMS_PER_INSTANCE < (n + 1) * 9
    assert auto_instance_size(np.full(100_000, 1)) == ATOMS_PER_INSTANCE
    # a small set keeps its updates: FreeSolv (513 training molecules of 8.7 atoms) stays 16
    assert auto_instance_size(np.full(513, 9)) == 16
    assert auto_instance_size(np.full(64 * 20, 9)) == 20          # capped by 64 instances
    assert auto_instance_size(np.array([], dtype=np.int64)) == 16
