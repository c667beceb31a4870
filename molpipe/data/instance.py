"""Instances: several molecules packed into one unit that travels the pipeline together."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from molpipe.chem.molgraph import MolGraph


@dataclass(frozen=True, eq=False)
class Instance:
    """A packed group of molecules; every molecule keeps its own plan.

    Fields
    ------
    V : (n_atoms, d_v) float32          atom features of all molecules, concatenated
    E : (n_edges, d_e) float32          directed-bond features
    src, dst : (n_edges,) int32         edge endpoints (instance-wide atom indices)
    etype : (n_edges,) int32            bond type of every edge
    atom_mol : (n_atoms,) int32         molecule (0..n_mols-1) of every atom
    atom_rounds : (n_atoms,) int32      rounds of the atom's molecule: atoms stay frozen
                                        in rounds >= their molecule's own count
    ring_atoms : (n_ring_atoms,) int32  ring members (instance-wide atom indices)
    ring_offsets : (n_rings + 1,) int32
    Y : (n_mols, n_targets) float32     targets in data units, NaN where missing
    rows : (n_mols,) int64              store row of every molecule
    n_rounds : int                      rounds the instance loops (max over its molecules)
    has_rings : bool                    whether the instance visits the ring stage
    """

    V: np.ndarray
    E: np.ndarray
    src: np.ndarray
    dst: np.ndarray
    etype: np.ndarray
    atom_mol: np.ndarray
    atom_rounds: np.ndarray
    ring_atoms: np.ndarray
    ring_offsets: np.ndarray
    Y: np.ndarray
    rows: np.ndarray
    n_rounds: int
    has_rings: bool

    @property
    def n_mols(self) -> int:
        return self.Y.shape[0]

    @property
    def n_atoms(self) -> int:
        return self.V.shape[0]


def pack(graphs: list[MolGraph], Y: np.ndarray, rows: np.ndarray | None = None) -> Instance:
    """Concatenate ``graphs`` (with targets ``Y``: (n_mols, n_targets)) into one Instance.

    Runs once per instance and epoch on the control node's thread, ahead of the pipeline:
    one pass over the molecules in Python, the rest whole-instance numpy calls.
    """
    V, E, edge_index, edge_type, ring_atoms, ring_ends = [], [], [], [], [], []
    n_atoms, n_edges, n_ring_atoms, n_rings, rounds = [], [], [], [], []
    for g in graphs:
        V.append(g.V)
        E.append(g.E)
        edge_index.append(g.edge_index)
        edge_type.append(g.edge_type)
        ring_atoms.append(g.ring_atoms)
        ring_ends.append(g.ring_offsets[1:])
        n_atoms.append(g.V.shape[0])
        n_edges.append(g.E.shape[0])
        n_ring_atoms.append(g.ring_atoms.shape[0])
        n_rings.append(g.ring_offsets.shape[0] - 1)
        rounds.append(g.n_rounds)
    atom_start = np.cumsum([0] + n_atoms[:-1])
    edge_shift = np.repeat(atom_start, n_edges)
    edge_index = np.concatenate(edge_index, axis=1)
    ring_start = np.cumsum([0] + n_ring_atoms[:-1])
    rounds = np.array(rounds, dtype=np.int32)
    return Instance(
        V=np.concatenate(V),
        E=np.concatenate(E),
        src=(edge_index[0] + edge_shift).astype(np.int32),
        dst=(edge_index[1] + edge_shift).astype(np.int32),
        etype=np.concatenate(edge_type).astype(np.int32),
        atom_mol=np.repeat(np.arange(len(graphs), dtype=np.int32), n_atoms),
        atom_rounds=np.repeat(rounds, n_atoms),
        ring_atoms=(np.concatenate(ring_atoms) + np.repeat(atom_start, n_ring_atoms)).astype(np.int32),
        # each molecule's ring ends, shifted by the ring atoms of the molecules before it
        ring_offsets=np.concatenate([[0], np.concatenate(ring_ends) + np.repeat(ring_start, n_rings)]
                                    ).astype(np.int32),
        Y=np.ascontiguousarray(Y, dtype=np.float32).reshape(len(graphs), -1),
        rows=np.arange(len(graphs), dtype=np.int64) if rows is None else np.asarray(rows, np.int64),
        n_rounds=int(max(rounds)),
        has_rings=any(g.has_rings for g in graphs),
    )


# An instance must carry enough atoms to pay for its messages (tens of µs of Python each):
# the knee measured on ESOL is 16 molecules of 13.3 heavy atoms (benchmarks/README.md).
MIN_MOLECULES_PER_INSTANCE = 16
ATOMS_PER_INSTANCE = 212
MIN_INSTANCES_PER_EPOCH = 64


def auto_instance_size(n_atoms: np.ndarray, atoms: int = ATOMS_PER_INSTANCE,
                       minimum: int = MIN_MOLECULES_PER_INSTANCE,
                       min_instances: int = MIN_INSTANCES_PER_EPOCH) -> int:
    """Molecules per instance for training molecules with ``n_atoms`` heavy atoms each.

    At least ``minimum``; more for small molecules, so that an instance holds about ``atoms``
    atoms, unless that would leave an epoch fewer than ``min_instances`` instances (a small
    data set needs its updates more than its throughput). ESOL, FreeSolv, Lipophilicity: 16;
    the QM9 subset: 24.
    """
    n = len(n_atoms)
    mean = float(np.mean(n_atoms)) if n else 1.0
    by_atoms = int(atoms // max(mean, 1.0))
    return max(minimum, min(by_atoms, n // min_instances))


def group_by_plan(
    n_rounds: np.ndarray,
    has_rings: np.ndarray,
    size: int,
    rng: np.random.Generator | None = None,
    bucket: bool = True,
) -> list[np.ndarray]:
    """Split molecule positions ``0..n-1`` into groups of at most ``size`` molecules.

    With ``bucket`` the molecules of a group share a plan (same rounds, rings or not), so every
    instance takes one control flow; groups are shuffled by ``rng`` (None keeps the order,
    for evaluation). The groups cover every position exactly once.
    """
    n = len(n_rounds)
    order = rng.permutation(n) if rng is not None else np.arange(n)
    if bucket:
        plan = np.asarray(n_rounds, np.int64)[order] * 2 + np.asarray(has_rings, np.int64)[order]
        by_plan = np.argsort(plan, kind="stable")
        order, plan = order[by_plan], plan[by_plan]
        buckets = np.split(order, np.flatnonzero(np.diff(plan)) + 1)
    else:
        buckets = [order]
    groups = [b[i:i + size] for b in buckets for i in range(0, len(b), size)]
    if rng is not None:
        groups = [groups[i] for i in rng.permutation(len(groups))]
    return groups


def pack_by_plan(graphs: list[MolGraph], Y: np.ndarray, size: int,
                 rng: np.random.Generator | None = None) -> list[tuple[Instance, np.ndarray]]:
    """``graphs`` (targets ``Y``: (n, n_targets)) packed into instances of at most ``size``
    molecules of one plan (``group_by_plan``); (instance, positions in ``graphs``) pairs."""
    n_rounds = np.array([g.n_rounds for g in graphs])
    has_rings = np.array([g.has_rings for g in graphs])
    Y = np.asarray(Y, np.float32)
    return [(pack([graphs[i] for i in rows], Y[rows]), rows)
            for rows in group_by_plan(n_rounds, has_rings, size, rng)]
