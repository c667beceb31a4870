"""Embed stage: atom and bond encoders ``H = tanh(V W_v + b_v)``, ``Eh = E W_e + b_e``."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.activations import tanh_bwd, tanh_fwd
from molpipe.kernels.dense import dense_bwd_params, dense_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.nn.stage import Arrays, Stage


class EmbedStage(Stage):
    """Encode atoms and bonds; reads V and E from ``x`` if given, else from the instance."""

    name = "embed"

    @classmethod
    def create(cls, rng: np.random.Generator, d_v: int, d_e: int, d_h: int, dtype) -> "EmbedStage":
        return cls({"W_v": glorot(rng, d_v, d_h, dtype=dtype), "b_v": zeros(d_h, dtype),
                    "W_e": glorot(rng, d_e, d_h, dtype=dtype), "b_e": zeros(d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        dtype = p["W_v"].dtype
        V = np.ascontiguousarray(x["V"] if "V" in x else inst.V, dtype=dtype)
        E = np.ascontiguousarray(x["E"] if "E" in x else inst.E, dtype=dtype)
        H = tanh_fwd(dense_fwd(V, p["W_v"], p["b_v"]))
        Eh = dense_fwd(E, p["W_e"], p["b_e"])
        if train:
            self.save(key, step, (V, E, H))
        return {"H": H, "Eh": Eh}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        V, E, H = self.pop(key, step)
        g = self.grads
        dW, db = dense_bwd_params(V, tanh_bwd(H, dy["H"]))
        g["W_v"] += dW
        g["b_v"] += db
        if "Eh" in dy and E.shape[0] > 0:
            dW, db = dense_bwd_params(E, np.ascontiguousarray(dy["Eh"]))
            g["W_e"] += dW
            g["b_e"] += db
        return {}
