"""Pooling atoms into molecules: attention weights, weighted gated sums, aggregation channels.

A readout turns atom vectors into one vector per molecule. Its pieces, each ``op_fwd``
beside its ``op_bwd``:

* ``attention_fwd``: per-atom weights ``α[a] = exp(e[a]) / Σ_{b ∈ mol(a)} exp(e[b])``
  (a softmax inside every molecule) from per-atom scores ``e``;
* ``weighted_gated_sum_fwd``: ``S[m] = Σ_{a ∈ m} α[a] G[a] ⊙ J[a]``;
* ``channels_fwd``: ``h[m] = [C[m, 0] S[m], C[m, 1] S[m], ...]``: the molecule's sum seen
  through K scales side by side (``1 / n_atoms`` makes a mean, ``1`` a sum, ``1 / 100``
  chemprop's ``norm``), so one readout can express intensive and extensive properties;
* ``mask_fwd``: ``X ⊙ M`` (dropout with a fixed mask).
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def attention_fwd(e, seg, n_seg):
    """α: (n,) the softmax of the scores ``e``: (n,) within every segment (max-shifted)."""
    n = e.shape[0]
    top = np.full(n_seg, -np.inf, dtype=e.dtype)
    for i in range(n):
        if e[i] > top[seg[i]]:
            top[seg[i]] = e[i]
    total = np.zeros(n_seg, dtype=e.dtype)
    alpha = np.empty_like(e)
    for i in range(n):
        alpha[i] = np.exp(e[i] - top[seg[i]])
        total[seg[i]] += alpha[i]
    for i in range(n):
        alpha[i] /= total[seg[i]]
    return alpha


@njit(nogil=True, cache=True, error_model="numpy")
def attention_bwd(dalpha, alpha, seg, n_seg):
    """Backward of ``attention_fwd``: ``de[a] = α[a] (dα[a] - Σ_{b ∈ mol(a)} α[b] dα[b])``."""
    n = alpha.shape[0]
    dot = np.zeros(n_seg, dtype=alpha.dtype)
    for i in range(n):
        dot[seg[i]] += alpha[i] * dalpha[i]
    de = np.empty_like(alpha)
    for i in range(n):
        de[i] = alpha[i] * (dalpha[i] - dot[seg[i]])
    return de


@njit(nogil=True, cache=True, error_model="numpy")
def weighted_gated_sum_fwd(alpha, G, J, seg, n_seg):
    """``S[s] = Σ_{i: seg[i] = s} α[i] G[i] ⊙ J[i]``; α: (n,), G, J: (n, d) -> S: (n_seg, d)."""
    n, d = G.shape
    S = np.zeros((n_seg, d), dtype=G.dtype)
    for i in range(n):
        s, a = seg[i], alpha[i]
        for j in range(d):
            S[s, j] += a * G[i, j] * J[i, j]
    return S


@njit(nogil=True, cache=True, error_model="numpy")
def weighted_gated_sum_bwd(dS, alpha, G, J, seg):
    """Backward of ``weighted_gated_sum_fwd``: ``dα[i] = dS[seg[i]] · (G[i] ⊙ J[i])``,
    ``dG[i] = α[i] dS[seg[i]] ⊙ J[i]``, ``dJ[i] = α[i] dS[seg[i]] ⊙ G[i]``."""
    n, d = G.shape
    dalpha = np.zeros(n, dtype=G.dtype)
    dG = np.empty_like(G)
    dJ = np.empty_like(J)
    for i in range(n):
        s, a = seg[i], alpha[i]
        acc = G.dtype.type(0.0)
        for j in range(d):
            g = dS[s, j]
            acc += g * G[i, j] * J[i, j]
            dG[i, j] = a * g * J[i, j]
            dJ[i, j] = a * g * G[i, j]
        dalpha[i] = acc
    return dalpha, dG, dJ


@njit(nogil=True, cache=True, error_model="numpy")
def channels_fwd(S, C):
    """``h[m, k d + j] = C[m, k] S[m, j]``; S: (n_mols, d), C: (n_mols, K) -> h: (n_mols, K d)."""
    n, d = S.shape
    K = C.shape[1]
    h = np.empty((n, K * d), dtype=S.dtype)
    for m in range(n):
        for k in range(K):
            c = C[m, k]
            for j in range(d):
                h[m, k * d + j] = c * S[m, j]
    return h


@njit(nogil=True, cache=True, error_model="numpy")
def channels_bwd(dh, C):
    """Backward of ``channels_fwd``: ``dS[m, j] = Σ_k C[m, k] dh[m, k d + j]``."""
    n, K = C.shape
    d = dh.shape[1] // K
    dS = np.zeros((n, d), dtype=dh.dtype)
    for m in range(n):
        for k in range(K):
            c = C[m, k]
            for j in range(d):
                dS[m, j] += c * dh[m, k * d + j]
    return dS


@njit(nogil=True, cache=True, error_model="numpy")
def mask_fwd(X, M):
    """``X ⊙ M`` (a new array); X, M: (n, d). A dropout mask holds 0 or 1 / (1 - p)."""
    return X * M


@njit(nogil=True, cache=True, error_model="numpy")
def mask_bwd(dY, M):
    """Backward of ``mask_fwd``: ``dX = dY ⊙ M``."""
    return dY * M
