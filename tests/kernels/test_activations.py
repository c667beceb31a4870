import numpy as np
import pytest

from molpipe.kernels import activations as A

from .fd import check

REFS = {
    "tanh": np.tanh,
    "sigmoid": lambda x: 1.0 / (1.0 + np.exp(-x)),
    "relu": lambda x: np.maximum(x, 0.0),
}


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("shape", [(1, 1), (4, 7), (13, 3)])
def test_fwd_matches_numpy(name, shape):
    rng = np.random.default_rng(shape[0])
    fwd = getattr(A, f"{name}_fwd")
    for dtype in (np.float32, np.float64):
        X = (3 * rng.normal(size=shape)).astype(dtype)
        Y = fwd(X)
        assert Y.dtype == dtype
        np.testing.assert_allclose(Y, REFS[name](X.astype(np.float64)), rtol=1e-6, atol=1e-6)


@pytest.mark.parametrize("name", sorted(REFS))
@pytest.mark.parametrize("shape", [(1, 1), (4, 7), (13, 3)])
def test_bwd_finite_differences(name, shape):
    rng = np.random.default_rng(100 + shape[0])
    fwd, bwd = getattr(A, f"{name}_fwd"), getattr(A, f"{name}_bwd")
    X = rng.normal(size=shape)
    if name == "relu":  # keep away from the kink
        X += np.where(X >= 0, 0.1, -0.1)
        X[0, 0] = 0.5
    w = rng.normal(size=shape)
    check(lambda: fwd(X), X, bwd(fwd(X), w), w)


def test_sigmoid_extreme_values_are_finite():
    X = np.array([[-1000.0, 1000.0, 0.0]], np.float32)
    Y = A.sigmoid_fwd(X)
    assert np.all(np.isfinite(Y))
    np.testing.assert_allclose(Y, [[0.0, 1.0, 0.5]])
