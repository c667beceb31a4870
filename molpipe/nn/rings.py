"""Ring stage: rings as super-nodes, ``Rt = tanh(mean_ring(H) W_r + b_r)``, added back to members."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.rings import ring_stage_bwd, ring_stage_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.runtime.stage import Arrays, Stage


class RingStage(Stage):
    """``H_out[a] = H[a] + sum over rings r containing a of Rt[r]``; drops Ea."""

    name = "rings"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "RingStage":
        return cls({"W_r": glorot(rng, d_h, d_h, dtype=dtype), "b_r": zeros(d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        H = x["H"]
        self.nonfinite, H_out, R, Rt = ring_stage_fwd(H, p["W_r"], p["b_r"], inst.ring_atoms,
                                                      inst.ring_offsets)
        if train:
            self.save(key, step, (R, Rt))
        return {"H": H_out}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        R, Rt = self.pop(key, step)
        self.nonfinite, dH = ring_stage_bwd(dy["H"], R, Rt, self.params["W_r"], self.grads["W_r"],
                                             self.grads["b_r"], inst.ring_atoms, inst.ring_offsets)
        return {"H": dH}
