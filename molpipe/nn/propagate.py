"""Propagate stage: one round of GGNN edge messages + GRU update (same parameters every round).

``HW = H W_m``; ``M[dst[e]] += HW[src[e], etype[e] block] + Eh[e]`` (computed by (type, atom)
pairs in ``typed_message_fwd``: the same sum with fewer multiplications);
``MX = M W_x + b_x``; ``HU = H U_h + b_h``; ``H' = GRU(MX, HU, H)``;
``H_out = where(atom_rounds > step, H', H)``. Eh passes through unchanged.
"""

from __future__ import annotations

import numpy as np

from molpipe.chem.molgraph import BOND_TYPES
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.gru import gru_bwd, gru_fwd
from molpipe.kernels.typed_message import pair_plan, typed_message_bwd, typed_message_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.nn.stage import Arrays, Stage

N_TYPES = len(BOND_TYPES)


class PropagateStage(Stage):
    """One message-passing round; the runtime loops the instance back here ``n_rounds`` times."""

    name = "propagate"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "PropagateStage":
        return cls({"W_m": glorot(rng, d_h, d_h, N_TYPES, dtype),
                    "W_x": glorot(rng, d_h, d_h, 3, dtype), "b_x": zeros(3 * d_h, dtype),
                    "U_h": glorot(rng, d_h, d_h, 3, dtype), "b_h": zeros(3 * d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        H, Eh = x["H"], x["Eh"]
        plan = pair_plan(inst.dst, inst.etype, H.shape[0], N_TYPES)
        M, S = typed_message_fwd(H, Eh, p["W_m"], inst.src, inst.dst, *plan)
        MX = dense_fwd(M, p["W_x"], p["b_x"])
        HU = dense_fwd(H, p["U_h"], p["b_h"])
        H_out, gates = gru_fwd(MX, HU, H, inst.atom_rounds, step)
        if train:
            self.save(key, step, (H, M, HU, gates, S, plan))
        return {"H": H_out, "Eh": Eh}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        H, M, HU, gates, S, plan = self.pop(key, step)
        p, g = self.params, self.grads
        dMX, dHU, dH = gru_bwd(np.ascontiguousarray(dy["H"]), H, HU, gates, inst.atom_rounds, step)
        dM, dW, db = dense_bwd(M, p["W_x"], dMX)
        g["W_x"] += dW
        g["b_x"] += db
        dH_u, dW, db = dense_bwd(H, p["U_h"], dHU)
        g["U_h"] += dW
        g["b_h"] += db
        dH_m, dW, dEh = typed_message_bwd(dM, S, p["W_m"], inst.src, inst.dst, *plan)
        g["W_m"] += dW
        dH += dH_u
        dH += dH_m
        dEh_in = dy.get("Eh")
        if dEh_in is not None:
            dEh += dEh_in
        return {"H": dH, "Eh": dEh}
