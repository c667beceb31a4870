"""Floating-point operations of every stage call, counted analytically from the shapes.

One function per stage, ``<stage>_flops(s, step) -> (forward, backward)``, each a ``Count``:
the stage's matmuls as (m, k, n) shapes (``2 m k n`` FLOPs each, the BLAS convention) and
its elementwise terms by name. Conventions: one FLOP per add, multiply, compare (relu) and
per transcendental (tanh, sigmoid: one each, although the float32 polynomial of
``kernels._math`` spends ~20 instructions on one); gradients added into a stage's
accumulators (``g += dW``) count one per element; copies, gathers, index arithmetic and the
non-finite counts count nothing. The counts follow the kernels in ``molpipe.kernels`` term
by term (embed, rounds, rings, readout, loss); ``tests/test_roofline.py`` checks them against
a hand count.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from molpipe.kernels.typed_message import pair_plan


@dataclass(frozen=True)
class Shapes:
    """What the FLOP counts read from an instance and a network.

    Fields: n (atoms), n_e (directed edges), pairs (existing (bond type, atom) pairs per
    type), n_r (rings), n_ra (ring memberships), n_mols, d_v, d_e, d_h, d_ffn, k (readout
    channels), d_x (atom features the readout reads, 0 without the skip), n_out (Y's
    columns), active[step] (atoms still updated in round ``step``), n_rounds.
    """

    n: int
    n_e: int
    pairs: tuple[int, ...]
    n_r: int
    n_ra: int
    n_mols: int
    d_v: int
    d_e: int
    d_h: int
    d_ffn: int
    k: int
    d_x: int
    n_out: int
    active: tuple[int, ...]
    n_rounds: int

    @classmethod
    def of(cls, network, inst) -> "Shapes":
        """The shapes of ``inst`` through ``network`` (an atom-round network: split or fused)."""
        st = network.stages
        W_m = (st["message"] if "message" in st else st["propagate"]).params["W_m"]
        _, offsets, _ = pair_plan(inst.dst, inst.etype, inst.n_atoms, W_m.shape[0])
        ro = st["readout"].params
        return cls(n=inst.n_atoms, n_e=int(inst.src.shape[0]),
                   pairs=tuple(int(p) for p in np.diff(offsets)),
                   n_r=int(inst.ring_offsets.shape[0] - 1), n_ra=int(inst.ring_atoms.shape[0]),
                   n_mols=inst.n_mols, d_v=int(inst.V.shape[1]), d_e=int(inst.E.shape[1]),
                   d_h=int(W_m.shape[1]), d_ffn=int(ro["W_1"].shape[1]),
                   k=int(ro["W_1"].shape[0] // W_m.shape[1]),
                   d_x=int(ro["U_g"].shape[0]) if "U_g" in ro else 0,
                   n_out=int(ro["W_2"].shape[1]),
                   active=tuple(int((inst.atom_rounds > t).sum()) for t in range(inst.n_rounds)),
                   n_rounds=int(inst.n_rounds))


@dataclass
class Count:
    """FLOPs of one call: matmul shapes (m, k, n) plus named elementwise terms."""

    matmuls: list[tuple[int, int, int]] = field(default_factory=list)
    other: dict[str, int] = field(default_factory=dict)

    def mm(self, m: int, k: int, n: int) -> "Count":
        if m and k and n:
            self.matmuls.append((m, k, n))
        return self

    def add(self, name: str, flops: int) -> "Count":
        self.other[name] = self.other.get(name, 0) + int(flops)
        return self

    @property
    def matmul_flops(self) -> int:
        return sum(2 * m * k * n for m, k, n in self.matmuls)

    @property
    def flops(self) -> int:
        return self.matmul_flops + sum(self.other.values())


def embed_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """``H = tanh(V W_v + b_v)``, ``Ea = B W_e + deg b_e`` (``B`` the bond features summed
    at every atom); backward ``dW_v = V^T (dH (1 - H²))``, ``dW_e = B^T dEa``, the biases."""
    n, d_h, d_v, d_e = s.n, s.d_h, s.d_v, s.d_e
    f = (Count().mm(n, d_v, d_h).mm(n, d_e, d_h)
         .add("bias", n * d_h).add("tanh", n * d_h).add("bond sum", s.n_e * d_e)
         .add("deg b_e", 2 * n * d_h))
    b = (Count().mm(d_v, n, d_h).mm(d_e, n, d_h)
         .add("tanh'", 3 * n * d_h).add("db", n * d_h + 2 * n * d_h)
         .add("g +=", (d_v + d_e + 2) * d_h))
    return f, b


def message_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """``S[p] = Σ H[src]`` by (type, atom) pair, ``M = Ea + Σ_t S_t W_m[t]``,
    ``MX = M W_x + b_x``; backward ``dW_x = M^T dMX``, ``dM = dMX W_x^T``,
    ``dW_m[t] = S_t^T dM_t``, ``dS_t = dM_t W_m[t]^T``, ``dH[src] += dS``."""
    n, d_h, P = s.n, s.d_h, sum(s.pairs)
    f = Count().add("edge sum", s.n_e * d_h)
    b = Count().mm(d_h, n, 3 * d_h).mm(n, 3 * d_h, d_h).add("db", 3 * n * d_h)
    for p in s.pairs:
        f.mm(p, d_h, d_h)
        b.mm(d_h, p, d_h).mm(p, d_h, d_h)
    f.add("M +=", P * d_h).mm(n, d_h, 3 * d_h).add("bias", 3 * n * d_h)
    b.add("g +=", 3 * d_h * d_h + 3 * d_h + len(s.pairs) * d_h * d_h)
    b.add("edge scatter", s.n_e * d_h).add("dH +=", n * d_h)
    if step < s.n_rounds - 1:            # later rounds' dEa arrives with the gradient
        b.add("dEa +=", n * d_h)
    return f, b


def update_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """``HU = H U_h + b_h``, the GRU gates of the atoms still active (11 per element: r, z
    two each, n three, ``(1 - z) n + z H`` four); backward 16 per active element, ``dU_h =
    H^T dHU``, ``dH = dHU U_h^T`` (+ the direct ``g z``)."""
    n, d_h, a = s.n, s.d_h, s.active[step]
    f = Count().mm(n, d_h, 3 * d_h).add("bias", 3 * n * d_h).add("gru", 11 * a * d_h)
    b = (Count().add("gru'", 16 * a * d_h).mm(d_h, n, 3 * d_h).add("db", 3 * n * d_h)
         .mm(n, 3 * d_h, d_h).add("g +=", 3 * d_h * d_h + 3 * d_h).add("dH +=", n * d_h))
    return f, b


def propagate_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """The fused round: message then update."""
    (mf, mb), (uf, ub) = message_flops(s, step), update_flops(s, step)
    return _sum(mf, uf), _sum(ub, mb)


def rings_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """``R`` the rings' mean states, ``Rt = tanh(R W_r + b_r)`` added to the members;
    backward the members' sum, ``tanh'``, ``dW_r = R^T dRt'``, ``dR``, the mean's scatter."""
    d_h, r, ra = s.d_h, s.n_r, s.n_ra
    f = (Count().add("pool", ra * d_h + r * d_h).mm(r, d_h, d_h).add("bias", r * d_h)
         .add("tanh", r * d_h).add("broadcast", ra * d_h))
    b = (Count().add("gather", ra * d_h).add("tanh'", 3 * r * d_h).mm(d_h, r, d_h)
         .mm(r, d_h, d_h).add("db", r * d_h).add("g +=", d_h * d_h + d_h)
         .add("pool'", 2 * ra * d_h).add("dH +=", s.n * d_h))
    return f, b


def readout_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """``G = σ(H W_g + X U_g + b_g)``, ``J = tanh(H W_j + X U_j + b_j)``, ``S[m] = Σ G ⊙ J``,
    ``h = [C_k S]_k``, ``Z = relu(h W_1 + b_1)``, ``Y = Z W_2 + b_2`` (no attention, no
    dropout: the defaults); backward term by term (``readout_bwd``)."""
    n, d_h, d_x, m, k, d_f, o = s.n, s.d_h, s.d_x, s.n_mols, s.k, s.d_ffn, s.n_out
    f = Count().mm(n, d_h, d_h).mm(n, d_h, d_h).add("bias", 2 * n * d_h)
    if d_x:
        f.mm(n, d_x, d_h).mm(n, d_x, d_h).add("X U +", 2 * n * d_h)
    f.add("σ, tanh", 2 * n * d_h).add("gated sum", 3 * n * d_h).add("channels", k * m * d_h)
    f.mm(m, k * d_h, d_f).add("bias", m * d_f).add("relu", m * d_f)
    f.mm(m, d_f, o).add("bias", m * o)
    b = (Count().mm(d_f, m, o).mm(m, o, d_f).add("db", m * o).add("relu'", m * d_f)
         .mm(k * d_h, m, d_f).mm(m, d_f, k * d_h).add("db", m * d_f)
         .add("channels'", 2 * k * m * d_h).add("gated sum'", 7 * n * d_h)
         .add("σ', tanh'", 6 * n * d_h)
         .mm(d_h, n, d_h).mm(n, d_h, d_h).mm(d_h, n, d_h).mm(n, d_h, d_h)
         .add("db", 2 * n * d_h).add("dH +=", n * d_h))
    if d_x:
        b.mm(d_x, n, d_h).mm(d_x, n, d_h)
    b.add("g +=", d_f * o + o + k * d_h * d_f + d_f + 2 * d_h * d_h + 2 * d_h + 2 * d_x * d_h)
    return f, b


def loss_flops(s: Shapes, step: int = 0) -> tuple[Count, Count]:
    """Masked MSE: ``(Y - T)²`` summed (3 per element) and the scaling of the targets (2);
    backward ``scale (Y - T)`` (2 per element)."""
    e = s.n_mols * s.n_out
    return Count().add("mse", 3 * e).add("targets", 2 * e), Count().add("mse'", 2 * e)


def _sum(a: Count, b: Count) -> Count:
    out = Count(list(a.matmuls) + list(b.matmuls), dict(a.other))
    for name, v in b.other.items():
        out.add(name, v)
    return out


STAGE_FLOPS = {"embed": embed_flops, "message": message_flops, "update": update_flops,
               "propagate": propagate_flops, "rings": rings_flops, "readout": readout_flops,
               "loss": loss_flops}
