"""Directed-bond propagation (``propagate="bond"``, D-MPNN style) as the network's stages.

The embed stage turns every directed bond into a state ``H = relu(P0)``,
``P0 = [V[src], E] W_i + b_i``. A round is two stages, as the atom rounds are: ``message``
(``M[e] = Σ_{k -> src(e), k ≠ rev(e)} H[k]``, then ``Z1 = M W_h1``) and ``update``
(``H' = relu(P0 + [Z1, M W_h2])``), ``W_h`` split by columns so the two workers share the
round's arithmetic. After its molecule's last round, the update stage turns bonds back into
atoms, ``A = relu([V, Σ_{e -> a} H[e]] W_o + b_o)``, for the ring stage and the readout.
``P0`` travels with the instance through every round and its gradient is summed over them.
"""

from __future__ import annotations

import numpy as np

from molpipe.kernels import bond
from molpipe.nn.init import glorot, zeros
from molpipe.runtime.stage import Arrays, Stage


def _features(inst, dtype) -> tuple[np.ndarray, np.ndarray]:
    return (np.ascontiguousarray(inst.V, dtype=dtype), np.ascontiguousarray(inst.E, dtype=dtype))


def _reverse(inst) -> np.ndarray:
    return bond.reverse_edges(inst.src, inst.dst, inst.n_atoms)


class BondEmbedStage(Stage):
    """Directed bonds -> states H, P0: (n_edges, d_h)."""

    name = "embed"

    @classmethod
    def create(cls, rng: np.random.Generator, d_v: int, d_e: int, d_h: int, dtype) -> "BondEmbedStage":
        return cls({"W_i": glorot(rng, d_v + d_e, d_h, dtype=dtype), "b_i": zeros(d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        V, E = _features(inst, p["W_i"].dtype)
        self.nonfinite, H, P0, XE = bond.bond_init_fwd(V, E, inst.src, p["W_i"], p["b_i"])
        if train:
            self.save(key, step, (H, XE))
        return {"H": H, "P0": P0}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        H, XE = self.pop(key, step)
        dP0 = dy.get("P0")
        self.nonfinite = bond.bond_init_bwd(np.ascontiguousarray(dy["H"]),
                                            H[:0] if dP0 is None else np.ascontiguousarray(dP0),
                                            H, XE, self.grads["W_i"], self.grads["b_i"])
        return {}


class BondMessageStage(Stage):
    """First half of a bond round: the messages M and their first product columns Z1."""

    name = "message"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "BondMessageStage":
        W_h = glorot(rng, d_h, d_h, dtype=dtype)
        return cls({"W_h1": np.ascontiguousarray(W_h[:, : d_h // 2])})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        rev = _reverse(inst)
        self.nonfinite, M, Z1 = bond.bond_message_fwd(x["H"], self.params["W_h1"], inst.src,
                                                      inst.dst, rev, inst.n_atoms)
        if train:
            self.save(key, step, (M, rev))
        return {"H": x["H"], "P0": x["P0"], "M": M, "Z1": Z1}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        M, rev = self.pop(key, step)
        dH_in = dy.get("H")
        self.nonfinite, dH = bond.bond_message_bwd(
            np.ascontiguousarray(dy["Z1"]), np.ascontiguousarray(dy["M"]),
            np.zeros_like(M) if dH_in is None else np.ascontiguousarray(dH_in), M,
            self.params["W_h1"], self.grads["W_h1"], inst.src, inst.dst, rev, inst.n_atoms)
        out = {"H": dH}
        if dy.get("P0") is not None:
            out["P0"] = dy["P0"]
        return out


class BondUpdateStage(Stage):
    """Second half of a bond round; after the instance's last round, bonds -> atom states."""

    name = "update"

    @classmethod
    def create(cls, rng: np.random.Generator, d_v: int, d_h: int, dtype) -> "BondUpdateStage":
        W_h = glorot(rng, d_h, d_h, dtype=dtype)     # scaled as one (d_h, d_h) W_h would be
        return cls({"W_h2": np.ascontiguousarray(W_h[:, d_h // 2:]),
                    "W_o": glorot(rng, d_v + d_h, d_h, dtype=dtype), "b_o": zeros(d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        p = self.params
        rounds = inst.atom_rounds[inst.src]
        n, H = bond.bond_update_fwd(x["H"], x["P0"], x["M"], x["Z1"], p["W_h2"], rounds, step)
        last = step + 1 >= inst.n_rounds
        saved = [H, x["M"], rounds]
        if last:
            V = np.ascontiguousarray(inst.V, dtype=p["W_o"].dtype)
            n_a, A, XM = bond.atomize_fwd(H, V, inst.dst, p["W_o"], p["b_o"])
            n += n_a
            saved += [A, XM, V.shape[1]]
        self.nonfinite = n
        if train:
            self.save(key, step, tuple(saved))
        return {"H": A} if last else {"H": H, "P0": x["P0"]}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        saved = self.pop(key, step)
        p, g = self.params, self.grads
        H, M, rounds = saved[:3]
        n = 0
        if len(saved) > 3:                    # the last round: back from the atom states first
            A, XM, d_v = saved[3:]
            n, dH = bond.atomize_bwd(np.ascontiguousarray(dy["H"]), A, XM, p["W_o"], g["W_o"],
                                     g["b_o"], inst.dst, d_v)
        else:
            dH = np.ascontiguousarray(dy["H"])
        dP0 = dy.get("P0")
        n_u, dH, dP0, dZ1, dM = bond.bond_update_bwd(
            dH, H[:0] if dP0 is None else np.ascontiguousarray(dP0), H, M, p["W_h2"], g["W_h2"],
            rounds, step, M.shape[1] - p["W_h2"].shape[1])
        self.nonfinite = n + n_u
        return {"H": dH, "P0": dP0, "Z1": dZ1, "M": dM}
