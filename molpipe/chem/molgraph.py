"""MolGraph: one molecule as plain float32/int32 arrays, ready for numba."""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

#: bond types, in the order of ``edge_type`` values and of the per-type message weights
BOND_TYPES = ("single", "double", "triple", "aromatic")


@dataclass(frozen=True, eq=False)
class MolGraph:
    """An immutable molecular graph with its own plan (control flow through the network).

    Fields
    ------
    V : (n_atoms, d_v) float32
        atom features.
    E : (n_edges, d_e) float32
        directed-bond features; every bond appears twice (i->j and j->i).
    edge_index : (2, n_edges) int32
        ``edge_index[0]`` source atom, ``edge_index[1]`` destination atom; edges are
        sorted by ``edge_type`` (grouped by bond type).
    edge_type : (n_edges,) int32
        index into ``BOND_TYPES``.
    ring_atoms : (n_ring_atoms,) int32
        atom indices of every ring (RDKit's symmetrized SSSR), rings concatenated.
    ring_offsets : (n_rings + 1,) int32
        ring ``r`` is ``ring_atoms[ring_offsets[r]:ring_offsets[r + 1]]``.
    ring_system : (n_rings,) int32
        id of the fused ring system each ring belongs to (naphthalene: two rings, one system).
    fragment : (n_atoms,) int32
        connected-component id of every atom (a salt has several).
    n_rounds : int
        propagation rounds this molecule loops through (from its diameter, clipped).
    has_rings : bool
        whether this molecule visits the ring stage.
    """

    V: np.ndarray
    E: np.ndarray
    edge_index: np.ndarray
    edge_type: np.ndarray
    ring_atoms: np.ndarray
    ring_offsets: np.ndarray
    ring_system: np.ndarray
    fragment: np.ndarray
    n_rounds: int
    has_rings: bool

    @property
    def n_atoms(self) -> int:
        return self.V.shape[0]

    @property
    def n_edges(self) -> int:
        return self.E.shape[0]

    @property
    def n_rings(self) -> int:
        return self.ring_offsets.shape[0] - 1

    @property
    def plan(self) -> tuple[int, bool]:
        """The molecule's control flow: (rounds, visits the ring stage)."""
        return self.n_rounds, self.has_rings
