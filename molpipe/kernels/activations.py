"""Element-wise activations (tanh, sigmoid, relu) on 2-d arrays, forward beside backward.

Backwards take the forward *output* ``Y`` (what the forward saves), except relu which may
take either (``Y > 0`` iff ``X > 0``).
"""

import numpy as np
from numba import njit

from molpipe.kernels._math import sigmoid_s, tanh_s


@njit(nogil=True, cache=True, error_model="numpy")
def tanh_fwd(X):
    """``Y = tanh(X)``."""
    Y = np.empty_like(X)
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            Y[i, j] = tanh_s(X[i, j])
    return Y


@njit(nogil=True, cache=True, error_model="numpy")
def tanh_bwd(Y, dY):
    """``dX = dY (1 - Y^2)`` with ``Y = tanh(X)``."""
    one = Y.dtype.type(1.0)
    dX = np.empty_like(dY)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            dX[i, j] = dY[i, j] * (one - Y[i, j] * Y[i, j])
    return dX


@njit(nogil=True, cache=True, error_model="numpy")
def sigmoid_fwd(X):
    """``Y = 1 / (1 + exp(-X))``, stable for large |X|."""
    Y = np.empty_like(X)
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            Y[i, j] = sigmoid_s(X[i, j])
    return Y


@njit(nogil=True, cache=True, error_model="numpy")
def sigmoid_bwd(Y, dY):
    """``dX = dY Y (1 - Y)`` with ``Y = sigmoid(X)``."""
    one = Y.dtype.type(1.0)
    dX = np.empty_like(dY)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            dX[i, j] = dY[i, j] * Y[i, j] * (one - Y[i, j])
    return dX


@njit(nogil=True, cache=True, error_model="numpy")
def relu_fwd(X):
    """``Y = max(X, 0)``."""
    zero = X.dtype.type(0.0)
    Y = np.empty_like(X)
    n, d = X.shape
    for i in range(n):
        for j in range(d):
            Y[i, j] = X[i, j] if X[i, j] > zero else zero
    return Y


@njit(nogil=True, cache=True, error_model="numpy")
def relu_bwd(Y, dY):
    """``dX = dY [Y > 0]``."""
    zero = Y.dtype.type(0.0)
    dX = np.empty_like(dY)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            dX[i, j] = dY[i, j] if Y[i, j] > zero else zero
    return dX
