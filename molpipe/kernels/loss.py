"""Masked losses over (n_mols, n_targets): a NaN target is missing and contributes nothing.

Each averages over the present entries: ``loss = sum(mask * l) / max(1, sum(mask))``.
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


#: the variance's floor (in the units of Y): keeps ``log var`` and ``1 / var`` finite
VAR_EPS = 1e-6


@njit(nogil=True, cache=True, error_model="numpy")
def _softplus(s, zero):
    """``log(1 + exp(s))`` in the stable form ``max(s, 0) + log(1 + exp(-|s|))``."""
    return max(s, zero) + np.log1p(np.exp(-abs(s)))


@njit(nogil=True, cache=True, error_model="numpy")
def _sigmoid(s, one):
    if s >= 0:
        return one / (one + np.exp(-s))
    e = np.exp(s)
    return e / (one + e)


@njit(nogil=True, cache=True, error_model="numpy")
def gaussian_variance(S):
    """``var = softplus(S) + VAR_EPS``: the variance a mean-variance head's raw output S means."""
    zero, eps = S.dtype.type(0.0), S.dtype.type(VAR_EPS)
    out = np.empty_like(S)
    n, d = S.shape
    for i in range(n):
        for j in range(d):
            out[i, j] = _softplus(S[i, j], zero) + eps
    return out


@njit(nogil=True, cache=True, error_model="numpy")
def masked_gaussian_nll_fwd(Y, T):
    """Masked Gaussian negative log-likelihood of a mean-variance head; returns a scalar.

    Y: (n, 2 d) holds the means ``mu = Y[:, :d]`` and the raw variances ``s = Y[:, d:]``;
    T: (n, d). Per present entry ``0.5 (log var + (t - mu)^2 / var)`` with
    ``var = softplus(s) + VAR_EPS`` (the constant ``0.5 log 2 pi`` left out).
    """
    zero, half, eps = Y.dtype.type(0.0), Y.dtype.type(0.5), Y.dtype.type(VAR_EPS)
    acc = zero
    n, d = T.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                var = _softplus(Y[i, d + j], zero) + eps
                r = Y[i, j] - t
                acc += half * (np.log(var) + r * r / var)
    return acc / Y.dtype.type(_count(T))


@njit(nogil=True, cache=True, error_model="numpy")
def masked_gaussian_nll_bwd(Y, T, dloss):
    """Backward of ``masked_gaussian_nll_fwd``; with ``c = dloss / max(1, sum mask)``, per
    present entry ``d mu = c (mu - t) / var`` and
    ``d s = c 0.5 (1 / var - (t - mu)^2 / var^2) sigmoid(s)`` (softplus' = sigmoid)."""
    zero, one, half = Y.dtype.type(0.0), Y.dtype.type(1.0), Y.dtype.type(0.5)
    eps = Y.dtype.type(VAR_EPS)
    scale = Y.dtype.type(dloss) / Y.dtype.type(_count(T))
    dY = np.zeros_like(Y)
    n, d = T.shape
    for i in range(n):
        for j in range(d):
            t = T[i, j]
            if not np.isnan(t):
                s = Y[i, d + j]
                var = _softplus(s, zero) + eps
                r = Y[i, j] - t
                dY[i, j] = scale * r / var
                dY[i, d + j] = scale * half * (one / var - r * r / (var * var)) * _sigmoid(s, one)
    return dY
