import numpy as np
import pytest

from molpipe.kernels.message import message_bwd, message_fwd
from molpipe.kernels.typed_message import pair_plan, typed_message_bwd, typed_message_fwd

from .fd import check
from .test_message import random_edges


def plan_for(dst, etype, n_atoms):
    return pair_plan(dst, etype, n_atoms, 4)


def per_atom(Eh, dst, n_atoms):
    """``Ea[a] = Σ_{e: dst[e]=a} Eh[e]``."""
    Ea = np.zeros((n_atoms, Eh.shape[1]), Eh.dtype)
    np.add.at(Ea, dst, Eh)
    return Ea


def test_pair_plan_groups_edges():
    dst = np.array([0, 2, 0, 1, 2], np.int32)
    etype = np.array([3, 0, 3, 0, 3], np.int32)
    pair_atom, offsets, edge_pair = plan_for(dst, etype, 3)
    np.testing.assert_array_equal(offsets, [0, 2, 2, 2, 4])
    np.testing.assert_array_equal(pair_atom, [1, 2, 0, 2])
    np.testing.assert_array_equal(edge_pair, [2, 1, 2, 0, 3])


@pytest.mark.parametrize("n_atoms,n_edges,d_h", [(1, 0, 3), (3, 4, 2), (12, 30, 5), (40, 90, 16)])
def test_typed_message_fwd_equals_message_fwd(n_atoms, n_edges, d_h):
    rng = np.random.default_rng(n_edges)
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    for dtype in (np.float32, np.float64):
        H = rng.normal(size=(n_atoms, d_h)).astype(dtype)
        W_m = rng.normal(size=(d_h, 4 * d_h)).astype(dtype)
        Eh = rng.normal(size=(n_edges, d_h)).astype(dtype)
        M, _ = typed_message_fwd(H, per_atom(Eh, dst, n_atoms), W_m, src,
                                 *plan_for(dst, etype, n_atoms))
        assert M.dtype == dtype
        ref = message_fwd((H @ W_m).astype(dtype), Eh, src, dst, etype, n_atoms)
        np.testing.assert_allclose(M, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_atoms,n_edges,d_h", [(3, 4, 2), (8, 20, 3)])
def test_typed_message_bwd_finite_differences(n_atoms, n_edges, d_h):
    rng = np.random.default_rng(9 + n_edges)
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    plan = plan_for(dst, etype, n_atoms)
    H, W_m = rng.normal(size=(n_atoms, d_h)), rng.normal(size=(d_h, 4 * d_h))
    Ea = rng.normal(size=(n_atoms, d_h))
    w = rng.normal(size=(n_atoms, d_h))
    _, S = typed_message_fwd(H, Ea, W_m, src, *plan)
    dH, dW_m = typed_message_bwd(w, S, W_m, src, *plan)
    f = lambda: typed_message_fwd(H, Ea, W_m, src, *plan)[0]  # noqa: E731
    check(f, H, dH, w)
    check(f, Ea, w, w)                      # the gradient of Ea is dM itself
    # W_m blocks of types without edges get zero gradient, as in the HW formulation
    dHW, _ = message_bwd(w, src, dst, etype, 4)
    np.testing.assert_allclose(dW_m, H.T @ dHW, rtol=1e-10, atol=1e-12)
    check(f, W_m, dW_m, w)
