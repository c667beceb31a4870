import numpy as np
import pytest

from molpipe.kernels.dense import dense_bwd, dense_bwd_params, dense_fwd

from .fd import check


@pytest.mark.parametrize("n,d_in,d_out", [(1, 1, 1), (5, 3, 4), (17, 8, 6)])
def test_dense_fwd_matches_numpy(n, d_in, d_out):
    rng = np.random.default_rng(n)
    for dtype in (np.float32, np.float64):
        X = rng.normal(size=(n, d_in)).astype(dtype)
        W = rng.normal(size=(d_in, d_out)).astype(dtype)
        b = rng.normal(size=d_out).astype(dtype)
        Y = dense_fwd(X, W, b)
        assert Y.dtype == dtype
        np.testing.assert_allclose(Y, X @ W + b, rtol=1e-5, atol=1e-5)


@pytest.mark.parametrize("n,d_in,d_out", [(1, 1, 1), (5, 3, 4), (9, 6, 2)])
def test_dense_bwd_finite_differences(n, d_in, d_out):
    rng = np.random.default_rng(10 + n)
    X, W, b = rng.normal(size=(n, d_in)), rng.normal(size=(d_in, d_out)), rng.normal(size=d_out)
    w = rng.normal(size=(n, d_out))
    dX, dW, db = dense_bwd(X, W, w)
    check(lambda: dense_fwd(X, W, b), X, dX, w)
    check(lambda: dense_fwd(X, W, b), W, dW, w)
    check(lambda: dense_fwd(X, W, b), b, db, w)
    dW2, db2 = dense_bwd_params(X, w)
    np.testing.assert_allclose(dW2, dW)
    np.testing.assert_allclose(db2, db)


def test_dense_float32_stays_float32_and_empty_rows():
    X = np.zeros((0, 3), np.float32)
    W = np.ones((3, 2), np.float32)
    Y = dense_fwd(X, W, np.zeros(2, np.float32))
    assert Y.shape == (0, 2) and Y.dtype == np.float32
    dX, dW, db = dense_bwd(X, W, Y)
    assert dX.shape == (0, 3) and not dW.any() and not db.any()
    assert dW.dtype == np.float32
