"""The half-round kernels: finite differences for every input and parameter, the gradient
accumulation (``g_* +=``) and pass-through additions they do in place, and the non-finite
counts they return."""

import numpy as np
import pytest

from molpipe.kernels import rounds

from .fd import check
from .test_typed_message import random_edges

N_TYPES = 4


def _message_case(rng, n_atoms=7, n_edges=16, d_h=3):
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    arrays = {"H": rng.normal(size=(n_atoms, d_h)), "Ea": rng.normal(size=(n_atoms, d_h)),
              "W_m": rng.normal(size=(N_TYPES, d_h, d_h)),
              "W_x": rng.normal(size=(d_h, 3 * d_h)), "b_x": rng.normal(size=3 * d_h)}
    return arrays, (src, dst, etype)


@pytest.mark.parametrize("wrt", ["H", "Ea", "W_m", "W_x", "b_x"])
def test_message_half_bwd_finite_differences(wrt):
    rng = np.random.default_rng(3)
    a, (src, dst, etype) = _message_case(rng)

    def f():
        return rounds.message_half_fwd(a["H"], a["Ea"], a["W_m"], a["W_x"], a["b_x"],
                                       src, dst, etype, N_TYPES)[1]

    n, MX, M, S, *plan = rounds.message_half_fwd(a["H"], a["Ea"], a["W_m"], a["W_x"], a["b_x"],
                                                 src, dst, etype, N_TYPES)
    assert n == 0
    w = rng.normal(size=MX.shape)
    g = {k: np.zeros_like(a[k]) for k in ("W_m", "W_x", "b_x")}
    n, dH, dEa = rounds.message_half_bwd(w, np.zeros_like(a["H"]), a["Ea"][:0], M, S, a["W_m"],
                                         a["W_x"], g["W_m"], g["W_x"], g["b_x"], src, *plan)
    assert n == 0
    analytic = {"H": dH, "Ea": dEa, **g}[wrt]
    check(f, a[wrt], analytic, w)


@pytest.mark.parametrize("wrt", ["H", "MX", "U_h", "b_h"])
def test_update_half_bwd_finite_differences(wrt):
    rng = np.random.default_rng(4)
    n_atoms, d_h, step = 6, 3, 1
    a = {"H": rng.normal(size=(n_atoms, d_h)), "MX": rng.normal(size=(n_atoms, 3 * d_h)),
         "U_h": rng.normal(size=(d_h, 3 * d_h)), "b_h": rng.normal(size=3 * d_h)}
    atom_rounds = np.array([3, 1, 2, 4, 1, 2], np.int32)     # atoms 1 and 4 are frozen at step 1

    def f():
        return rounds.update_half_fwd(a["H"], a["MX"], a["U_h"], a["b_h"], atom_rounds, step)[1]

    _, H_out, HU_n, gates = rounds.update_half_fwd(a["H"], a["MX"], a["U_h"], a["b_h"],
                                                 atom_rounds, step)
    np.testing.assert_array_equal(H_out[[1, 4]], a["H"][[1, 4]])
    w = rng.normal(size=H_out.shape)
    g = {k: np.zeros_like(a[k]) for k in ("U_h", "b_h")}
    _, dH, dMX = rounds.update_half_bwd(w, a["H"], HU_n, gates, a["U_h"], g["U_h"], g["b_h"],
                                        atom_rounds, step)
    analytic = {"H": dH, "MX": dMX, **g}[wrt]
    check(f, a[wrt], analytic, w)


def test_backwards_add_to_the_gradients_and_the_pass_through_they_are_given():
    rng = np.random.default_rng(5)
    a, (src, dst, etype) = _message_case(rng)
    _, MX, M, S, *plan = rounds.message_half_fwd(a["H"], a["Ea"], a["W_m"], a["W_x"], a["b_x"],
                                                 src, dst, etype, N_TYPES)
    dMX = rng.normal(size=MX.shape)

    def bwd(g, dH_in, dEa_in):
        return rounds.message_half_bwd(dMX, dH_in, dEa_in, M, S, a["W_m"], a["W_x"], g["W_m"],
                                       g["W_x"], g["b_x"], src, *plan)[1:]

    zero = {k: np.zeros_like(a[k]) for k in ("W_m", "W_x", "b_x")}
    dH0, dEa0 = bwd(zero, np.zeros_like(a["H"]), a["Ea"][:0])
    start = {k: rng.normal(size=v.shape) for k, v in zero.items()}
    g = {k: v.copy() for k, v in start.items()}
    dH_in, dEa_in = rng.normal(size=a["H"].shape), rng.normal(size=a["Ea"].shape)
    dH1, dEa1 = bwd(g, dH_in, dEa_in)
    for k in g:
        np.testing.assert_allclose(g[k], start[k] + zero[k], rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dH1, dH0 + dH_in, rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(dEa1, dEa0 + dEa_in, rtol=1e-12, atol=1e-12)


def test_counts_are_the_nonfinite_values_made_and_gathered():
    rng = np.random.default_rng(10)
    a, (src, dst, etype) = _message_case(rng)
    a["H"][2, 1] = np.nan                       # one atom's state: every edge from it is NaN
    n, MX, M, S, *plan = rounds.message_half_fwd(a["H"], a["Ea"], a["W_m"], a["W_x"], a["b_x"],
                                                 src, dst, etype, N_TYPES)
    assert n == np.count_nonzero(~np.isfinite(MX)) > 0
    g = {k: np.zeros_like(a[k]) for k in ("W_m", "W_x", "b_x")}
    n, dH, dEa = rounds.message_half_bwd(np.zeros_like(MX), np.zeros_like(a["H"]), a["Ea"][:0],
                                         M, S, a["W_m"], a["W_x"], g["W_m"], g["W_x"], g["b_x"],
                                         src, *plan)
    made = sum(np.count_nonzero(~np.isfinite(x)) for x in (dH, dEa, *g.values()))
    assert n == made > 0                         # dW_m = S^T dM: S holds the NaN (NaN * 0)
    # a gathered gradient that overflows counts although every part of it is finite
    # a gathered gradient that overflows counts, although every part of it is finite
    f32, active = np.float32, np.array([1, 1], np.int32)
    H, U_h = np.ones((2, 1), f32), np.zeros((1, 3), f32)
    n, H_out, HU_n, gates = rounds.update_half_fwd(H, np.zeros((2, 3), f32), U_h, np.zeros(3, f32),
                                                 active, 0)
    assert n == 0
    g_U, g_b = np.zeros((1, 3), f32), np.full(3, 3e38, f32)
    n, dH, dMX = rounds.update_half_bwd(np.full((2, 1), 3e38, f32), H, HU_n, gates, U_h, g_U, g_b,
                                        active, 0)
    assert np.isfinite(dH).all() and np.isfinite(dMX).all()
    assert n == np.count_nonzero(np.isinf(g_b)) > 0
