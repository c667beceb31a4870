import numpy as np
import pytest

from molpipe.kernels.typed_message import pair_plan, typed_message_bwd, typed_message_fwd
from molpipe.nn.layout import blocks_from_columns

from .fd import check


def random_edges(rng, n_atoms, n_edges, n_types=4):
    src = rng.integers(0, n_atoms, n_edges).astype(np.int32)
    dst = rng.integers(0, n_atoms, n_edges).astype(np.int32)
    etype = rng.integers(0, n_types, n_edges).astype(np.int32)
    return src, dst, etype


def message_ref(HW, Eh, src, dst, etype, n_atoms):
    """``M[dst[e]] += HW[src[e], etype[e] block] + Eh[e]``, edge by edge in numpy."""
    d_h = Eh.shape[1]
    M = np.zeros((n_atoms, d_h))
    for e in range(len(src)):
        M[dst[e]] += HW[src[e], etype[e] * d_h:(etype[e] + 1) * d_h] + Eh[e]
    return M


def message_ref_dHW(dM, src, dst, etype, n_types):
    """The gradient of ``message_ref`` by ``HW``: each edge's dM[dst] into its type block."""
    n_atoms, d_h = dM.shape
    dHW = np.zeros((n_atoms, n_types * d_h))
    for e in range(len(src)):
        dHW[src[e], etype[e] * d_h:(etype[e] + 1) * d_h] += dM[dst[e]]
    return dHW


def plan_for(dst, etype, n_atoms):
    return pair_plan(dst, etype, n_atoms, 4)


def columns(W_m):
    """(n_types, d_h, d_h) blocks side by side: (d_h, n_types d_h), the ``H W_m`` of message_ref."""
    n_types, d_h, _ = W_m.shape
    return W_m.transpose(1, 0, 2).reshape(d_h, n_types * d_h)


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
        W_m = rng.normal(size=(4, d_h, d_h)).astype(dtype)
        Eh = rng.normal(size=(n_edges, d_h)).astype(dtype)
        M, _ = typed_message_fwd(H, per_atom(Eh, dst, n_atoms), W_m, src,
                                 *plan_for(dst, etype, n_atoms))
        assert M.dtype == dtype
        ref = message_ref((H @ columns(W_m)).astype(dtype), Eh, src, dst, etype, n_atoms)
        np.testing.assert_allclose(M, ref, rtol=1e-4, atol=1e-4)


@pytest.mark.parametrize("n_atoms,n_edges,d_h", [(3, 4, 2), (8, 20, 3)])
def test_typed_message_bwd_finite_differences(n_atoms, n_edges, d_h):
    rng = np.random.default_rng(9 + n_edges)
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    plan = plan_for(dst, etype, n_atoms)
    H, W_m = rng.normal(size=(n_atoms, d_h)), rng.normal(size=(4, d_h, d_h))
    Ea = rng.normal(size=(n_atoms, d_h))
    w = rng.normal(size=(n_atoms, d_h))
    _, S = typed_message_fwd(H, Ea, W_m, src, *plan)
    dH, dW_m = typed_message_bwd(w, S, W_m, src, *plan)
    f = lambda: typed_message_fwd(H, Ea, W_m, src, *plan)[0]  # noqa: E731
    check(f, H, dH, w)
    check(f, Ea, w, w)                      # the gradient of Ea is dM itself
    # W_m blocks of types without edges get zero gradient, as in the HW formulation
    dHW = message_ref_dHW(w, src, dst, etype, 4)
    assert dW_m.shape == (4, d_h, d_h) and dW_m.flags.c_contiguous
    np.testing.assert_allclose(dW_m, blocks_from_columns(H.T @ dHW, 4), rtol=1e-10, atol=1e-12)
    check(f, W_m, dW_m, w)
    for t in range(4):                      # block t is the gradient of bond type t only
        if not np.any(etype == t):
            np.testing.assert_array_equal(dW_m[t], 0.0)


def test_block_t_is_the_weight_of_bond_type_t():
    """One edge of type t: the message is ``H[src] W_m[t]`` (not a transposed or mixed block)."""
    rng = np.random.default_rng(1)
    d_h = 3
    H, W_m = rng.normal(size=(2, d_h)), rng.normal(size=(4, d_h, d_h))
    src, dst = np.array([0], np.int32), np.array([1], np.int32)
    for t in range(4):
        etype = np.array([t], np.int32)
        M, _ = typed_message_fwd(H, np.zeros((2, d_h)), W_m, src, *plan_for(dst, etype, 2))
        np.testing.assert_allclose(M[1], H[0] @ W_m[t], rtol=1e-12)
        np.testing.assert_array_equal(M[0], 0.0)
