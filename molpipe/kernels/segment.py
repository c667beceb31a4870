"""Segment sums (atoms -> molecules) and the gated sum of the readout."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def segment_sum_fwd(X, seg, n_seg):
    """``S[s] = sum of X[i] with seg[i] == s``; X: (n, d), seg: (n,) -> S: (n_seg, d)."""
    n, d = X.shape
    S = np.zeros((n_seg, d), dtype=X.dtype)
    for i in range(n):
        s = seg[i]
        for j in range(d):
            S[s, j] += X[i, j]
    return S


@njit(nogil=True, cache=True, error_model="numpy")
def segment_sum_bwd(dS, seg):
    """Backward of ``segment_sum_fwd``: ``dX[i] = dS[seg[i]]``."""
    n = seg.shape[0]
    d = dS.shape[1]
    dX = np.empty((n, d), dtype=dS.dtype)
    for i in range(n):
        s = seg[i]
        for j in range(d):
            dX[i, j] = dS[s, j]
    return dX


@njit(nogil=True, cache=True, error_model="numpy")
def gated_sum_fwd(G, J, seg, n_seg):
    """``S[s] = sum over i with seg[i] == s of G[i] ⊙ J[i]``; G, J: (n, d) -> S: (n_seg, d)."""
    n, d = G.shape
    S = np.zeros((n_seg, d), dtype=G.dtype)
    for i in range(n):
        s = seg[i]
        for j in range(d):
            S[s, j] += G[i, j] * J[i, j]
    return S


@njit(nogil=True, cache=True, error_model="numpy")
def gated_sum_bwd(dS, G, J, seg):
    """Backward of ``gated_sum_fwd``: ``dG[i] = dS[seg[i]] ⊙ J[i]``, ``dJ[i] = dS[seg[i]] ⊙ G[i]``."""
    n, d = G.shape
    dG = np.empty_like(G)
    dJ = np.empty_like(J)
    for i in range(n):
        s = seg[i]
        for j in range(d):
            g = dS[s, j]
            dG[i, j] = g * J[i, j]
            dJ[i, j] = g * G[i, j]
    return dG, dJ
