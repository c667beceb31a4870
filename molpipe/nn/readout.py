"""Readout stage: gated sum (or mean) over atoms per molecule, then a two-layer MLP.

``G = σ(H W_g + b_g)``, ``J = tanh(H W_j + b_j)``, ``h_mol = Σ_{a ∈ mol} G[a] ⊙ J[a]``
(divided by the molecule's atom count with the ``mean`` aggregation, the default),
``Z = relu(h_mol W_1 + b_1)``, ``Y = Z W_2 + b_2`` (standardized units).
"""

from __future__ import annotations

import numpy as np

from molpipe.kernels.activations import (relu_bwd, relu_fwd, sigmoid_bwd, sigmoid_fwd, tanh_bwd,
                                         tanh_fwd)
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.segment import gated_sum_bwd, gated_sum_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.nn.stage import Arrays, Stage


class ReadoutStage(Stage):
    """Atoms -> molecule vector -> prediction Y: (n_mols, n_targets)."""

    name = "readout"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, d_ffn: int, n_targets: int,
               dtype, aggregation: str = "mean") -> "ReadoutStage":
        stage = cls({"W_g": glorot(rng, d_h, d_h, dtype=dtype), "b_g": zeros(d_h, dtype),
                    "W_j": glorot(rng, d_h, d_h, dtype=dtype), "b_j": zeros(d_h, dtype),
                    "W_1": glorot(rng, d_h, d_ffn, dtype=dtype), "b_1": zeros(d_ffn, dtype),
                    "W_2": glorot(rng, d_ffn, n_targets, dtype=dtype),
                    "b_2": zeros(n_targets, dtype)})
        stage.aggregation = aggregation
        return stage

    aggregation = "mean"

    def _scale(self, inst, dtype):
        """(n_mols, 1) factor on the gated sum: 1/n_atoms for ``mean``, else None."""
        if self.aggregation != "mean":
            return None
        counts = np.bincount(inst.atom_mol, minlength=inst.n_mols).astype(dtype)
        return (1.0 / np.maximum(counts, 1.0)).astype(dtype)[:, None]

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        H = x["H"]
        G = sigmoid_fwd(dense_fwd(H, p["W_g"], p["b_g"]))
        J = tanh_fwd(dense_fwd(H, p["W_j"], p["b_j"]))
        h_mol = gated_sum_fwd(G, J, inst.atom_mol, inst.n_mols)
        scale = self._scale(inst, H.dtype)
        if scale is not None:
            h_mol *= scale
        Z = relu_fwd(dense_fwd(h_mol, p["W_1"], p["b_1"]))
        Y = dense_fwd(Z, p["W_2"], p["b_2"])
        if train:
            self.save(key, step, (H, G, J, h_mol, Z))
        return {"Y": Y}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        H, G, J, h_mol, Z = self.pop(key, step)
        p, g = self.params, self.grads
        dZ, dW, db = dense_bwd(Z, p["W_2"], np.ascontiguousarray(dy["Y"]))
        g["W_2"] += dW
        g["b_2"] += db
        dh_mol, dW, db = dense_bwd(h_mol, p["W_1"], relu_bwd(Z, dZ))
        g["W_1"] += dW
        g["b_1"] += db
        scale = self._scale(inst, H.dtype)
        if scale is not None:
            dh_mol *= scale
        dG, dJ = gated_sum_bwd(dh_mol, G, J, inst.atom_mol)
        dH, dW, db = dense_bwd(H, p["W_g"], sigmoid_bwd(G, dG))
        g["W_g"] += dW
        g["b_g"] += db
        dH_j, dW, db = dense_bwd(H, p["W_j"], tanh_bwd(J, dJ))
        g["W_j"] += dW
        g["b_j"] += db
        dH += dH_j
        return {"H": dH}
