"""Ring stage: rings as super-nodes, ``Rt = tanh(mean_ring(H) W_r + b_r)``, added back to members."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.activations import tanh_bwd, tanh_fwd
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.rings import (ring_broadcast_bwd, ring_broadcast_fwd, ring_pool_bwd,
                                   ring_pool_fwd)
from molpipe.nn.init import glorot, zeros
from molpipe.nn.stage import Arrays, Stage


class RingStage(Stage):
    """``H_out[a] = H[a] + sum over rings r containing a of Rt[r]``; drops Eh."""

    name = "rings"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "RingStage":
        return cls({"W_r": glorot(rng, d_h, d_h, dtype=dtype), "b_r": zeros(d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        H = x["H"]
        R = ring_pool_fwd(H, inst.ring_atoms, inst.ring_offsets)
        Rt = tanh_fwd(dense_fwd(R, p["W_r"], p["b_r"]))
        H_out = ring_broadcast_fwd(H, Rt, inst.ring_atoms, inst.ring_offsets)
        if train:
            self.save(key, step, (R, Rt))
        return {"H": H_out}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        R, Rt = self.pop(key, step)
        dH, dRt = ring_broadcast_bwd(np.ascontiguousarray(dy["H"]), inst.ring_atoms,
                                     inst.ring_offsets)
        dR, dW, db = dense_bwd(R, self.params["W_r"], tanh_bwd(Rt, dRt))
        self.grads["W_r"] += dW
        self.grads["b_r"] += db
        dH += ring_pool_bwd(dR, inst.ring_atoms, inst.ring_offsets, dH.shape[0])
        return {"H": dH}
