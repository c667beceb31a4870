"""Propagation: one round of GGNN edge messages + GRU update (the same parameters every round).

A round has two halves, each a function pair on the round's parameters:

* **message**: ``M[a] = Ea[a] + Σ_{e: dst[e]=a} H[src[e]] W_m[etype[e]]`` (computed by
  (type, atom) pairs in ``typed_message_fwd``), then the GRU's input projection
  ``MX = M W_x + b_x``;
* **update**: ``HU = H U_h + b_h``; ``H' = GRU(MX, HU, H)``;
  ``H_out = where(atom_rounds > step, H', H)``.

The network runs a round either as one ``propagate`` stage (``fused``) or as two stages,
``message`` then ``update`` (``split``, the default): two workers that share a round's work
about evenly, so the propagation loop — nine tenths of the network's work — spans two cores.
``Ea`` (from the embed stage) is the bond encodings summed at every atom: the bond part of each
atom's message, the same every round. It passes through every stage unchanged; its gradient is
summed over the rounds.
"""

from __future__ import annotations

import numpy as np

from molpipe.chem.molgraph import BOND_TYPES
from molpipe.kernels import rounds
from molpipe.nn.init import glorot, zeros
from molpipe.nn.layout import blocks_from_columns
from molpipe.runtime.stage import Arrays, Stage

N_TYPES = len(BOND_TYPES)


def message_params(rng: np.random.Generator, d_h: int, dtype) -> Arrays:
    """W_m (n_types, d_h, d_h), ``W_m[t]`` the block of bond type t (the same values as the
    glorot draw's column blocks, so a seed gives the network it always gave); W_x, b_x."""
    return {"W_m": blocks_from_columns(glorot(rng, d_h, d_h, N_TYPES, dtype), N_TYPES),
            "W_x": glorot(rng, d_h, d_h, 3, dtype), "b_x": zeros(3 * d_h, dtype)}


def update_params(rng: np.random.Generator, d_h: int, dtype) -> Arrays:
    return {"U_h": glorot(rng, d_h, d_h, 3, dtype), "b_h": zeros(3 * d_h, dtype)}


def message_half_fwd(p: Arrays, H, Ea, inst):
    """``MX`` (n_atoms, 3 d_h) from ``H``, ``Ea``; returns (the non-finite count of MX, MX,
    what the backward needs)."""
    n, MX, *saved = rounds.message_half_fwd(H, Ea, p["W_m"], p["W_x"], p["b_x"],
                                            inst.src, inst.dst, inst.etype, N_TYPES)
    return n, MX, saved


def message_half_bwd(p: Arrays, g: Arrays, saved, dMX, dH, dEa, inst):
    """Adds the W_m, W_x, b_x gradients to ``g``; returns (non-finite count, dH, dEa) of the
    message half plus ``dH`` and ``dEa`` (gradients that reached H and Ea by other ways;
    ``dEa`` may be None)."""
    M, S, *plan = saved
    dEa = M[:0] if dEa is None else np.ascontiguousarray(dEa)
    return rounds.message_half_bwd(dMX, np.ascontiguousarray(dH), dEa, M, S, p["W_m"], p["W_x"],
                                   g["W_m"], g["W_x"], g["b_x"], inst.src, *plan)


def update_half_fwd(p: Arrays, H, MX, inst, step: int):
    """``H_out`` (n_atoms, d_h) of the GRU; returns (the non-finite count of H_out, H_out,
    what the backward needs)."""
    n, H_out, HU_n, gates = rounds.update_half_fwd(H, MX, p["U_h"], p["b_h"], inst.atom_rounds,
                                                   step)
    return n, H_out, (H, HU_n, gates)


def update_half_bwd(p: Arrays, g: Arrays, saved, dH_out, inst, step: int):
    """Adds the U_h, b_h gradients to ``g``; returns (non-finite count, dH, dMX) of the update
    half."""
    H, HU_n, gates = saved
    return rounds.update_half_bwd(dH_out, H, HU_n, gates, p["U_h"], g["U_h"], g["b_h"],
                                  inst.atom_rounds, step)


class PropagateStage(Stage):
    """A whole round in one stage (``fused``); the runtime loops the instance back here."""

    name = "propagate"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "PropagateStage":
        return cls({**message_params(rng, d_h, dtype), **update_params(rng, d_h, dtype)})

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        n_m, MX, saved_m = message_half_fwd(self.params, x["H"], x["Ea"], inst)
        n_u, H_out, saved_u = update_half_fwd(self.params, x["H"], MX, inst, step)
        self.nonfinite = n_m + n_u
        if train:
            self.save(key, step, (saved_m, saved_u))
        return {"H": H_out, "Ea": x["Ea"]}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        saved_m, saved_u = self.pop(key, step)
        n_u, dH, dMX = update_half_bwd(self.params, self.grads, saved_u, dy["H"], inst, step)
        n_m, dH, dEa = message_half_bwd(self.params, self.grads, saved_m, dMX, dH, dy.get("Ea"), inst)
        self.nonfinite = n_u + n_m
        return {"H": dH, "Ea": dEa}


class MessageStage(Stage):
    """First half of a round (``split``): messages along bonds, projected for the GRU."""

    name = "message"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "MessageStage":
        return cls(message_params(rng, d_h, dtype))

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        self.nonfinite, MX, saved = message_half_fwd(self.params, x["H"], x["Ea"], inst)
        if train:
            self.save(key, step, saved)
        return {"H": x["H"], "Ea": x["Ea"], "MX": MX}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        self.nonfinite, dH, dEa = message_half_bwd(self.params, self.grads, self.pop(key, step),
                                                   dy["MX"], dy["H"], dy.get("Ea"), inst)
        return {"H": dH, "Ea": dEa}


class UpdateStage(Stage):
    """Second half of a round (``split``): the GRU update of every still-active atom."""

    name = "update"

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, dtype) -> "UpdateStage":
        return cls(update_params(rng, d_h, dtype))

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        self.nonfinite, H_out, saved = update_half_fwd(self.params, x["H"], x["MX"], inst, step)
        if train:
            self.save(key, step, saved)
        return {"H": H_out, "Ea": x["Ea"]}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        self.nonfinite, dH, dMX = update_half_bwd(self.params, self.grads, self.pop(key, step),
                                                  dy["H"], inst, step)
        out = {"H": dH, "MX": dMX}
        if dy.get("Ea") is not None:
            out["Ea"] = dy["Ea"]
        return out
