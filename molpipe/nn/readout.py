"""Readout stage: gated sum (or mean) over atoms per molecule, then a two-layer MLP.

``G = σ(H W_g + b_g)``, ``J = tanh(H W_j + b_j)``, ``h_mol = Σ_{a ∈ mol} G[a] ⊙ J[a]``
(divided by the molecule's atom count with the ``mean`` aggregation, the default),
``Z = relu(h_mol W_1 + b_1)``, ``Y = Z W_2 + b_2`` (standardized units).
"""

from __future__ import annotations

import numpy as np

from molpipe.kernels.readout import readout_bwd, readout_fwd
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

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        H = x["H"]
        self.nonfinite, Y, *saved = readout_fwd(
            H, p["W_g"], p["b_g"], p["W_j"], p["b_j"], p["W_1"], p["b_1"], p["W_2"], p["b_2"],
            inst.atom_mol, inst.n_mols, self.aggregation == "mean")
        if train:
            self.save(key, step, (H, *saved))
        return {"Y": Y}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        H, G, J, h_mol, Z = self.pop(key, step)
        p, g = self.params, self.grads
        self.nonfinite, dH = readout_bwd(dy["Y"], H, G, J, h_mol, Z, p["W_g"], p["W_j"], p["W_1"],
                                         p["W_2"], g["W_g"], g["b_g"], g["W_j"], g["b_j"],
                                         g["W_1"], g["b_1"], g["W_2"], g["b_2"], inst.atom_mol,
                                         self.aggregation == "mean")
        return {"H": dH}
