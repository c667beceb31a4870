"""Masked losses over (n_mols, n_targets): a NaN target is missing and contributes nothing.

Both average over the present entries: ``loss = sum(mask * l) / max(1, sum(mask))``.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def _count(T):
    c = 0
    n, d = T.shape
    for i in range(n):
        for j in range(d):
            if not np.isnan(T[i, j]):
                c += 1
    return max(c, 1)


@njit(nogil=True, cache=True, error_model="numpy")
def masked_mse_fwd(Y, T):
    """Masked mean squared error ``sum mask (Y - T)^2 / max(1, sum mask)``; returns a scalar."""
    acc = Y.dtype.type(0.0)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                r = Y[i, j] - t
                acc += r * r
    return acc / Y.dtype.type(_count(T))


@njit(nogil=True, cache=True, error_model="numpy")
def masked_mse_bwd(Y, T, dloss):
    """Backward of ``masked_mse_fwd``: ``dY = dloss * 2 mask (Y - T) / max(1, sum mask)``."""
    scale = Y.dtype.type(2.0) * Y.dtype.type(dloss) / Y.dtype.type(_count(T))
    dY = np.zeros_like(Y)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                dY[i, j] = scale * (Y[i, j] - t)
    return dY


@njit(nogil=True, cache=True, error_model="numpy")
def masked_bce_fwd(Y, T):
    """Masked binary cross-entropy on logits Y, targets T in {0, 1}; returns a scalar.

    Per entry ``max(y, 0) - y t + log(1 + exp(-|y|))`` (stable form).
    """
    zero = Y.dtype.type(0.0)
    acc = zero
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                y = Y[i, j]
                acc += max(y, zero) - y * t + np.log1p(np.exp(-abs(y)))
    return acc / Y.dtype.type(_count(T))


@njit(nogil=True, cache=True, error_model="numpy")
def masked_bce_bwd(Y, T, dloss):
    """Backward of ``masked_bce_fwd``: ``dY = dloss * mask (sigmoid(Y) - T) / max(1, sum mask)``."""
    one = Y.dtype.type(1.0)
    scale = Y.dtype.type(dloss) / Y.dtype.type(_count(T))
    dY = np.zeros_like(Y)
    n, d = Y.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                y = Y[i, j]
                if y >= 0:
                    p = one / (one + np.exp(-y))
                else:
                    e = np.exp(y)
                    p = e / (one + e)
                dY[i, j] = scale * (p - t)
    return dY
