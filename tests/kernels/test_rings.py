import numpy as np
import pytest

from molpipe.kernels.rings import (ring_broadcast_bwd, ring_broadcast_fwd, ring_pool_bwd,
                                   ring_pool_fwd, ring_stage_bwd, ring_stage_fwd)

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


@pytest.mark.parametrize("wrt", ["H", "W_r", "b_r"])
def test_ring_stage_bwd_finite_differences(wrt):
    rng = np.random.default_rng(13)
    atoms, offsets = ring_arrays(RINGS)
    a = {"H": rng.normal(size=(N_ATOMS, 3)), "W_r": rng.normal(size=(3, 3)),
         "b_r": rng.normal(size=3)}

    def f():
        return ring_stage_fwd(a["H"], a["W_r"], a["b_r"], atoms, offsets)[1]

    n, H_out, R, Rt = ring_stage_fwd(a["H"], a["W_r"], a["b_r"], atoms, offsets)
    w = rng.normal(size=H_out.shape)
    g = {"W_r": np.zeros((3, 3)), "b_r": np.zeros(3)}
    m, dH = ring_stage_bwd(w, R, Rt, a["W_r"], g["W_r"], g["b_r"], atoms, offsets)
    assert n == 0 and m == 0
    check(f, a[wrt], {"H": dH, **g}[wrt], w)


def test_ring_stage_counts_the_nonfinite_values_made_and_gathered():
    atoms, offsets = ring_arrays(RINGS)
    H = np.ones((N_ATOMS, 2))
    H[13, 0] = np.nan                                  # an atom in no ring: passes through
    W, b = np.ones((2, 2)), np.zeros(2)
    n, H_out, R, Rt = ring_stage_fwd(H, W, b, atoms, offsets)
    assert n == 1
    dH_out = np.ones_like(H_out)
    dH_out[0, 1] = np.inf                              # a ring member's gradient
    g_W, g_b = np.zeros((2, 2)), np.zeros(2)
    n, dH = ring_stage_bwd(dH_out, R, Rt, W, g_W, g_b, atoms, offsets)
    assert n == sum(np.count_nonzero(~np.isfinite(x)) for x in (dH, g_W, g_b)) > 1
