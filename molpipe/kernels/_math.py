"""Scalar tanh / sigmoid for use inside kernels: exact for float64, fast and vectorizable for float32.

numba calls libm's scalar ``tanhf`` (~15 ns each) and cannot vectorize it. For float32 we
compute ``tanh(x) = (e - 1) / (e + 1)`` with ``e = exp(2|x|)`` from a range reduction
``2|x| log2(e) = k + f`` (|f| <= 1/2), ``e - 1 = q 2^k + (2^k - 1)`` with ``q = expm1(f ln 2)``
as a degree-8 Taylor polynomial (relative error < 1e-8), and ``2^k`` as an integer shift: no
calls, so LLVM vectorizes the loops. Max error against float64 tanh: a few float32 ulp.
"""

import numpy as np
from numba import njit, types
from numba.extending import overload


def tanh_s(x):
    """tanh of a scalar (implemented per dtype below)."""
    return np.tanh(x)


def sigmoid_s(x):
    """Logistic sigmoid of a scalar (implemented per dtype below)."""
    return 1.0 / (1.0 + np.exp(-x))


@njit(error_model="numpy")
def _tanh32(x):
    f32 = np.float32
    a = min(abs(x), f32(9.0))                    # tanh(9) == 1 in float32
    t = a * f32(2.8853900817779268)              # 2 a log2(e)
    k = np.int32(t + f32(0.5))                   # round (t >= 0)
    f = (t - f32(k)) * f32(0.6931471805599453)   # |f| <= ln2 / 2
    q = f * (f32(1.0) + f * (f32(1 / 2) + f * (f32(1 / 6) + f * (f32(1 / 24) + f * (
        f32(1 / 120) + f * (f32(1 / 720) + f * (f32(1 / 5040) + f * f32(1 / 40320))))))))
    p = f32(np.int32(1) << k)
    em1 = q * p + (p - f32(1.0))                 # exp(2a) - 1
    r = em1 / (em1 + f32(2.0))
    return r if x >= f32(0.0) else -r


@njit(error_model="numpy")
def _sigmoid64(x):
    if x >= 0:
        return 1.0 / (1.0 + np.exp(-x))
    e = np.exp(x)
    return e / (1.0 + e)


@overload(tanh_s)
def _ov_tanh(x):
    if x == types.float32:
        return lambda x: _tanh32(x)
    return lambda x: np.tanh(x)


@overload(sigmoid_s)
def _ov_sigmoid(x):
    if x == types.float32:
        return lambda x: np.float32(0.5) + np.float32(0.5) * _tanh32(np.float32(0.5) * x)
    return lambda x: _sigmoid64(x)
