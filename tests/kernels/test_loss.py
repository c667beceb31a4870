import numpy as np
import pytest

from molpipe.kernels.loss import (VAR_EPS, gaussian_variance, masked_bce_bwd, masked_bce_fwd,
                                  masked_gaussian_nll_bwd, masked_gaussian_nll_fwd,
                                  masked_mse_bwd, masked_mse_fwd)

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


def nll_ref(Y, T):
    """The Gaussian NLL in plain numpy: Y = [mu | s], var = log(1 + e^s) + VAR_EPS."""
    d = T.shape[1]
    mu, var = Y[:, :d], np.log1p(np.exp(Y[:, d:])) + VAR_EPS
    m = ~np.isnan(T)
    l = 0.5 * (np.log(var) + (T - mu) ** 2 / var)
    return np.sum(l[m]) / max(1, m.sum())


def mve_outputs(rng, n, d, spread=3.0):
    """[mu | s] with s from -spread to spread: small and large variances, both softplus arms."""
    return np.hstack([rng.normal(size=(n, d)), rng.uniform(-spread, spread, (n, d))])


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (16, 2)])
def test_gaussian_nll_fwd_matches_numpy(shape):
    rng = np.random.default_rng(shape[0])
    T = targets(rng, shape, False)
    Y = mve_outputs(rng, *shape)
    for dtype in (np.float32, np.float64):
        got = masked_gaussian_nll_fwd(Y.astype(dtype), T.astype(dtype))
        np.testing.assert_allclose(got, nll_ref(Y.astype(dtype).astype(float), T), rtol=1e-5)
    S = Y[:, shape[1]:]
    np.testing.assert_allclose(gaussian_variance(S), np.log1p(np.exp(S)) + VAR_EPS, rtol=1e-12)


@pytest.mark.parametrize("shape", [(1, 1), (5, 3), (16, 2)])
def test_gaussian_nll_bwd_finite_differences(shape):
    rng = np.random.default_rng(40 + shape[0])
    T = targets(rng, shape, False)
    Y = mve_outputs(rng, *shape)
    dY = masked_gaussian_nll_bwd(Y, T, 2.5)
    assert dY.shape == Y.shape
    d = shape[1]
    assert not dY[:, :d][np.isnan(T)].any() and not dY[:, d:][np.isnan(T)].any()
    g = 2.5 * num_grad(lambda: masked_gaussian_nll_fwd(Y, T), Y)
    assert np.abs(g[:, d:]).sum() > 0                 # the variance half gets gradient
    assert rel_err(dY, g) < 1e-6


def test_gaussian_nll_is_least_where_the_variance_is_the_squared_error():
    """For one entry, d NLL / d var = 0 at var = (t - mu)^2: the head learns the error's size."""
    T = np.array([[0.0]])
    r = 0.7
    s = np.log(np.expm1(r * r - VAR_EPS))             # softplus(s) + eps == r^2
    Y = np.array([[r, s]])
    assert abs(masked_gaussian_nll_bwd(Y, T, 1.0)[0, 1]) < 1e-9
    for ds in (-0.3, 0.3):
        assert masked_gaussian_nll_fwd(Y + [[0, ds]], T) > masked_gaussian_nll_fwd(Y, T)


def test_gaussian_nll_all_missing_gives_zero_and_stays_finite_at_extremes():
    Y = np.ones((3, 4), np.float32)
    T = np.full((3, 2), np.nan, np.float32)
    assert masked_gaussian_nll_fwd(Y, T) == 0.0
    assert not masked_gaussian_nll_bwd(Y, T, 1.0).any()
    big = np.array([[0.0, -80.0], [0.0, 80.0]])       # variance at its floor, and huge
    T = np.array([[1e-4], [3.0]])
    assert np.isfinite(masked_gaussian_nll_fwd(big, T))
    assert np.isfinite(masked_gaussian_nll_bwd(big, T, 1.0)).all()
