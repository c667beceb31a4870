import numpy as np
import pytest

from molpipe.kernels.rings import (ring_broadcast_bwd, ring_broadcast_fwd, ring_pool_bwd,
                                   ring_pool_fwd)

from .fd import check

# naphthalene-like: two 6-rings sharing atoms 4, 5; plus a 3-ring; atoms 13, 14 in no ring
RINGS = [[0, 1, 2, 3, 4, 5], [4, 5, 6, 7, 8, 9], [10, 11, 12]]
N_ATOMS = 15


def ring_arrays(rings):
    atoms = np.array([a for r in rings for a in r], np.int32)
    offsets = np.concatenate([[0], np.cumsum([len(r) for r in rings])]).astype(np.int32)
    return atoms, offsets


@pytest.mark.parametrize("d", [1, 4])
def test_ring_pool_and_broadcast_fwd_match_numpy(d):
    rng = np.random.default_rng(d)
    atoms, offsets = ring_arrays(RINGS)
    for dtype in (np.float32, np.float64):
        H = rng.normal(size=(N_ATOMS, d)).astype(dtype)
        R = ring_pool_fwd(H, atoms, offsets)
        assert R.dtype == dtype
        np.testing.assert_allclose(R, np.stack([H[r].mean(0) for r in RINGS]), rtol=1e-6)
        Rt = rng.normal(size=(len(RINGS), d)).astype(dtype)
        ref = H.astype(np.float64).copy()
        for k, r in enumerate(RINGS):
            ref[r] += Rt[k]
        out = ring_broadcast_fwd(H, Rt, atoms, offsets)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, ref, rtol=1e-6)


def test_no_rings():
    atoms, offsets = np.zeros(0, np.int32), np.zeros(1, np.int32)
    H = np.ones((3, 2))
    assert ring_pool_fwd(H, atoms, offsets).shape == (0, 2)
    np.testing.assert_array_equal(ring_broadcast_fwd(H, np.zeros((0, 2)), atoms, offsets), H)


@pytest.mark.parametrize("rings", [RINGS[:1], RINGS])
@pytest.mark.parametrize("d", [1, 3])
def test_ring_bwd_finite_differences(rings, d):
    rng = np.random.default_rng(20 + d)
    atoms, offsets = ring_arrays(rings)
    H = rng.normal(size=(N_ATOMS, d))
    Rt = rng.normal(size=(len(rings), d))
    w_r = rng.normal(size=(len(rings), d))
    check(lambda: ring_pool_fwd(H, atoms, offsets), H,
          ring_pool_bwd(w_r, atoms, offsets, N_ATOMS), w_r)
    w = rng.normal(size=(N_ATOMS, d))
    dH, dRt = ring_broadcast_bwd(w, atoms, offsets)
    f = lambda: ring_broadcast_fwd(H, Rt, atoms, offsets)  # noqa: E731
    check(f, H, dH, w)
    check(f, Rt, dRt, w)
