import numpy as np
import pytest

from molpipe.kernels.gru import gru_bwd, gru_fwd

from .fd import check


def sigmoid(x):
    return 1.0 / (1.0 + np.exp(-x))


def gru_ref(MX, HU, H, atom_rounds, step):
    d = H.shape[1]
    r = sigmoid(MX[:, :d] + HU[:, :d])
    z = sigmoid(MX[:, d:2 * d] + HU[:, d:2 * d])
    n = np.tanh(MX[:, 2 * d:] + r * HU[:, 2 * d:])
    H_new = (1 - z) * n + z * H
    return np.where((atom_rounds > step)[:, None], H_new, H)


def inputs(rng, n, d):
    rounds = rng.integers(1, 4, n).astype(np.int32)
    return rng.normal(size=(n, 3 * d)), rng.normal(size=(n, 3 * d)), rng.normal(size=(n, d)), rounds


@pytest.mark.parametrize("n,d,step", [(1, 1, 0), (6, 3, 1), (11, 4, 2)])
def test_gru_fwd_matches_numpy(n, d, step):
    rng = np.random.default_rng(n)
    MX, HU, H, rounds = inputs(rng, n, d)
    for dtype in (np.float32, np.float64):
        H_out, _ = gru_fwd(MX.astype(dtype), HU.astype(dtype), H.astype(dtype), rounds, step)
        assert H_out.dtype == dtype
        np.testing.assert_allclose(H_out, gru_ref(MX, HU, H, rounds, step), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,d,step", [(1, 1, 0), (6, 3, 1), (11, 4, 2)])
def test_gru_bwd_finite_differences(n, d, step):
    rng = np.random.default_rng(50 + n)
    MX, HU, H, rounds = inputs(rng, n, d)
    rounds[0] = step + 1  # at least one active atom
    w = rng.normal(size=(n, d))
    _, gates = gru_fwd(MX, HU, H, rounds, step)
    dMX, dHU, dH = gru_bwd(w, H, np.ascontiguousarray(HU[:, 2 * d:]), gates, rounds, step)
    f = lambda: gru_fwd(MX, HU, H, rounds, step)[0]  # noqa: E731
    check(f, MX, dMX, w)
    check(f, HU, dHU, w)
    check(f, H, dH, w)


def test_frozen_atoms_pass_through():
    rng = np.random.default_rng(3)
    MX, HU, H, _ = inputs(rng, 4, 2)
    rounds = np.array([1, 3, 1, 3], np.int32)
    H_out, gates = gru_fwd(MX, HU, H, rounds, 1)
    np.testing.assert_array_equal(H_out[[0, 2]], H[[0, 2]])
    assert not np.allclose(H_out[[1, 3]], H[[1, 3]])
    dMX, dHU, dH = gru_bwd(np.ones_like(H), H, np.ascontiguousarray(HU[:, 4:]), gates, rounds, 1)
    assert not dMX[[0, 2]].any() and not dHU[[0, 2]].any()
    np.testing.assert_array_equal(dH[[0, 2]], 1.0)
