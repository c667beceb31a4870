import numpy as np
import pytest

from molpipe.kernels.message import message_bwd, message_fwd

from .fd import check


def random_edges(rng, n_atoms, n_edges, n_types=4):
    src = rng.integers(0, n_atoms, n_edges).astype(np.int32)
    dst = rng.integers(0, n_atoms, n_edges).astype(np.int32)
    etype = rng.integers(0, n_types, n_edges).astype(np.int32)
    return src, dst, etype


def message_ref(HW, Eh, src, dst, etype, n_atoms):
    d_h = Eh.shape[1]
    M = np.zeros((n_atoms, d_h))
    for e in range(len(src)):
        M[dst[e]] += HW[src[e], etype[e] * d_h:(etype[e] + 1) * d_h] + Eh[e]
    return M


@pytest.mark.parametrize("n_atoms,n_edges,d_h", [(1, 0, 3), (3, 4, 2), (12, 30, 5)])
def test_message_fwd_matches_numpy(n_atoms, n_edges, d_h):
    rng = np.random.default_rng(n_edges)
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    for dtype in (np.float32, np.float64):
        HW = rng.normal(size=(n_atoms, 4 * d_h)).astype(dtype)
        Eh = rng.normal(size=(n_edges, d_h)).astype(dtype)
        M = message_fwd(HW, Eh, src, dst, etype, n_atoms)
        assert M.dtype == dtype
        np.testing.assert_allclose(M, message_ref(HW, Eh, src, dst, etype, n_atoms),
                                   rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n_atoms,n_edges,d_h", [(3, 4, 2), (8, 20, 3)])
def test_message_bwd_finite_differences(n_atoms, n_edges, d_h):
    rng = np.random.default_rng(7 + n_edges)
    src, dst, etype = random_edges(rng, n_atoms, n_edges)
    HW = rng.normal(size=(n_atoms, 4 * d_h))
    Eh = rng.normal(size=(n_edges, d_h))
    w = rng.normal(size=(n_atoms, d_h))
    dHW, dEh = message_bwd(w, src, dst, etype, 4)
    f = lambda: message_fwd(HW, Eh, src, dst, etype, n_atoms)  # noqa: E731
    check(f, HW, dHW, w)
    check(f, Eh, dEh, w)
