"""Dense (affine) layer: ``Y = X W + b`` and its backward."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def dense_fwd(X, W, b):
    """``Y = X W + b``; X: (n, d_in), W: (d_in, d_out), b: (d_out,) -> Y: (n, d_out)."""
    Y = np.dot(X, W)
    n, d_out = Y.shape
    for i in range(n):
        for j in range(d_out):
            Y[i, j] += b[j]
    return Y


@njit(nogil=True, cache=True, error_model="numpy")
def dense_bwd_params(X, dY):
    """Parameter part of ``dense_bwd`` alone (when dX is not needed): ``dW, db``."""
    dW = np.dot(X.T, dY)
    n, d_out = dY.shape
    db = np.zeros(d_out, dtype=dY.dtype)
    for i in range(n):
        for j in range(d_out):
            db[j] += dY[i, j]
    return dW, db


@njit(nogil=True, cache=True, error_model="numpy")
def dense_bwd(X, W, dY):
    """Backward of ``dense_fwd``: ``dX = dY W^T``, ``dW = X^T dY``, ``db = sum_i dY[i]``."""
    dW, db = dense_bwd_params(X, dY)
    return np.dot(dY, W.T), dW, db
