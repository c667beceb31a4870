import numpy as np
import pytest

from molpipe.kernels.loss import masked_bce_bwd, masked_bce_fwd, masked_mse_bwd, masked_mse_fwd

from .fd import num_grad, rel_err


def targets(rng, shape, binary):
    T = rng.integers(0, 2, shape).astype(float) if binary else rng.normal(size=shape)
    T[rng.uniform(size=shape) < 0.3] = np.nan
    T.flat[0] = 1.0
    return T


def mse_ref(Y, T):
    m = ~np.isnan(T)
    return np.sum((Y[m] - T[m]) ** 2) / max(1, m.sum())


def bce_ref(Y, T):
    m = ~np.isnan(T)
    p = 1 / (1 + np.exp(-Y[m]))
    return -np.sum(T[m] * np.log(p) + (1 - T[m]) * np.log(1 - p)) / max(1, m.sum())


CASES = [("mse", masked_mse_fwd, masked_mse_bwd, mse_ref, False),
         ("bce", masked_bce_fwd, masked_bce_bwd, bce_ref, True)]


@pytest.mark.parametrize("name,fwd,bwd,ref,binary", CASES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (16, 2)])
def test_loss_fwd_matches_numpy(name, fwd, bwd, ref, binary, shape):
    rng = np.random.default_rng(shape[0])
    T = targets(rng, shape, binary)
    for dtype in (np.float32, np.float64):
        Y = rng.normal(size=shape).astype(dtype)
        np.testing.assert_allclose(fwd(Y, T.astype(dtype)), ref(Y.astype(float), T), rtol=1e-5)


@pytest.mark.parametrize("name,fwd,bwd,ref,binary", CASES)
@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (16, 2)])
def test_loss_bwd_finite_differences(name, fwd, bwd, ref, binary, shape):
    rng = np.random.default_rng(40 + shape[0])
    T = targets(rng, shape, binary)
    Y = rng.normal(size=shape)
    dY = bwd(Y, T, 2.5)
    assert not dY[np.isnan(T)].any()
    assert rel_err(dY, 2.5 * num_grad(lambda: fwd(Y, T), Y)) < 1e-6


@pytest.mark.parametrize("name,fwd,bwd,ref,binary", CASES)
def test_all_missing_gives_zero(name, fwd, bwd, ref, binary):
    Y = np.ones((3, 2), np.float32)
    T = np.full((3, 2), np.nan, np.float32)
    assert fwd(Y, T) == 0.0
    assert not bwd(Y, T, 1.0).any()
