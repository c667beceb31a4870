import numpy as np
import pytest
from numba import njit
from scipy.special import expit

from molpipe.kernels._math import sigmoid_s, tanh_s


@njit
def apply_tanh(x):
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        y[i] = tanh_s(x[i])
    return y


@njit
def apply_sigmoid(x):
    y = np.empty_like(x)
    for i in range(x.shape[0]):
        y[i] = sigmoid_s(x[i])
    return y


X = np.concatenate([np.linspace(-40, 40, 20001), np.logspace(-30, 1.5, 2000),
                    -np.logspace(-30, 1.5, 2000), [0.0, -0.0]])


def test_float32_tanh_within_a_few_ulp():
    x = X.astype(np.float32)
    y = apply_tanh(x)
    assert y.dtype == np.float32
    ref = np.tanh(x.astype(np.float64))
    ulp = np.spacing(np.abs(ref).astype(np.float32)).astype(np.float64)
    assert np.max(np.abs(y - ref) / ulp) <= 4
    assert np.all(np.abs(y) <= 1) and np.all(np.sign(y) == np.sign(ref))


def test_float32_sigmoid_absolute_error():
    x = X.astype(np.float32)
    y = apply_sigmoid(x)
    assert y.dtype == np.float32
    ref = 1 / (1 + np.exp(-x.astype(np.float64)))
    assert np.max(np.abs(y - ref)) < 2e-7
    assert np.all((y >= 0) & (y <= 1))


@pytest.mark.parametrize("f,ref", [(apply_tanh, np.tanh),
                                   (apply_sigmoid, expit)])
def test_float64_is_exact(f, ref):
    np.testing.assert_allclose(f(X), ref(X), rtol=1e-14, atol=1e-300)
