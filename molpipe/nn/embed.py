"""Embed stage: atom encoder ``H = tanh(V W_v + b_v)`` and the bond encodings summed at every
atom, ``Ea[a] = Σ_{e: dst[e]=a} (E[e] W_e + b_e)``: the bond part of each atom's message, the
same every round."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.embed import embed_bwd, embed_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.runtime.stage import Arrays, Stage


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
        self.nonfinite, H, Ea, B, deg = embed_fwd(V, E, inst.dst, p["W_v"], p["b_v"],
                                                  p["W_e"], p["b_e"])
        if train:
            self.save(key, step, (V, B, deg, H))
        return {"H": H, "Ea": Ea}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        V, B, deg, H = self.pop(key, step)
        g = self.grads
        dEa = dy.get("Ea")
        self.nonfinite = embed_bwd(dy["H"], H[:0] if dEa is None else dEa, V, B, deg, H,
                                   g["W_v"], g["b_v"], g["W_e"], g["b_e"])
        return {}
