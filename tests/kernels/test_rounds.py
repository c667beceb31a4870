"""The half-round kernels: finite differences for every input and parameter, and the
gradient accumulation (``g_* +=``) and pass-through additions they do in place."""

import numpy as np
import pytest

from molpipe.kernels import rounds

from .fd import check
from .test_message import random_edges

N_TYPES = 4


def _message_case(rng, n_atoms=7, n_edges=16, d_h=3):
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    arrays = {"H": rng.normal(size=(n_atoms, d_h)), "Eh": rng.normal(size=(n_edges, d_h)),
              "W_m": rng.normal(size=(d_h, N_TYPES * d_h)),
              "W_x": rng.normal(size=(d_h, 3 * d_h)), "b_x": rng.normal(size=3 * d_h)}
    return arrays, (src, dst, etype)


@pytest.mark.parametrize("wrt", ["H", "Eh", "W_m", "W_x", "b_x"])
def test_message_half_bwd_finite_differences(wrt):
    rng = np.random.default_rng(3)
    a, (src, dst, etype) = _message_case(rng)

    def f():
        return rounds.message_half_fwd(a["H"], a["Eh"], a["W_m"], a["W_x"], a["b_x"],
                                       src, dst, etype, N_TYPES)[0]

    MX, M, S, *plan = rounds.message_half_fwd(a["H"], a["Eh"], a["W_m"], a["W_x"], a["b_x"],
                                              src, dst, etype, N_TYPES)
    w = rng.normal(size=MX.shape)
    g = {k: np.zeros_like(a[k]) for k in ("W_m", "W_x", "b_x")}
    dH, dEh = rounds.message_half_bwd(w, np.zeros_like(a["H"]), M, S, a["W_m"], a["W_x"],
                                      g["W_m"], g["W_x"], g["b_x"], src, dst, *plan)
    analytic = {"H": dH, "Eh": dEh, **g}[wrt]
    check(f, a[wrt], analytic, w)


@pytest.mark.parametrize("wrt", ["H", "MX", "U_h", "b_h"])
def test_update_half_bwd_finite_differences(wrt):
    rng = np.random.default_rng(4)
    n_atoms, d_h, step = 6, 3, 1
    a = {"H": rng.normal(size=(n_atoms, d_h)), "MX": rng.normal(size=(n_atoms, 3 * d_h)),
         "U_h": rng.normal(size=(d_h, 3 * d_h)), "b_h": rng.normal(size=3 * d_h)}
    atom_rounds = np.array([3, 1, 2, 4, 1, 2], np.int32)     # atoms 1 and 4 are frozen at step 1

    def f():
        return rounds.update_half_fwd(a["H"], a["MX"], a["U_h"], a["b_h"], atom_rounds, step)[0]

    H_out, HU, gates = rounds.update_half_fwd(a["H"], a["MX"], a["U_h"], a["b_h"], atom_rounds, step)
    np.testing.assert_array_equal(H_out[[1, 4]], a["H"][[1, 4]])
    w = rng.normal(size=H_out.shape)
    g = {k: np.zeros_like(a[k]) for k in ("U_h", "b_h")}
    dH, dMX = rounds.update_half_bwd(w, a["H"], HU, gates, a["U_h"], g["U_h"], g["b_h"],
                                     atom_rounds, step)
    analytic = {"H": dH, "MX": dMX, **g}[wrt]
    check(f, a[wrt], analytic, w)


def test_backwards_add_to_the_gradients_and_the_pass_through_they_are_given():
    rng = np.random.default_rng(5)
    a, (src, dst, etype) = _message_case(rng)
    MX, M, S, *plan = rounds.message_half_fwd(a["H"], a["Eh"], a["W_m"], a["W_x"], a["b_x"],
                                              src, dst, etype, N_TYPES)
    dMX = rng.normal(size=MX.shape)

    def bwd(g, dH_in):
        return rounds.message_half_bwd(dMX, dH_in, M, S, a["W_m"], a["W_x"], g["W_m"], g["W_x"],
                                       g["b_x"], src, dst, *plan)

    zero = {k: np.zeros_like(a[k]) for k in ("W_m", "W_x", "b_x")}
    dH0, dEh0 = bwd(zero, np.zeros_like(a["H"]))
    start = {k: rng.normal(size=v.shape) for k, v in zero.items()}
    g = {k: v.copy() for k, v in start.items()}
    dH_in = rng.normal(size=a["H"].shape)
    dH1, dEh1 = bwd(g, dH_in)
    for k in g:
        np.testing.assert_allclose(g[k], start[k] + zero[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dH1, dH0 + dH_in, rtol=1e-12, atol=1e-12)
    np.testing.assert_array_equal(dEh1, dEh0)
