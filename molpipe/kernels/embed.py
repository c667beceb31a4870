"""The embed stage's forward and backward, each as one GIL-free call (see ``rounds``).

``H = tanh(V W_v + b_v)`` and ``Ea[a] = Σ_{e: dst[e]=a} (E[e] W_e + b_e) = B[a] W_e + deg[a] b_e``
(``B[a] = Σ_{e: dst[e]=a} E[e]``, ``deg[a]`` the number of edges into a): the bond encodings
summed at every atom, the bond part of each atom's message, the same every round, so computed
once here. Like the round kernels, each returns first how many NaN/inf values it made.
"""

import numpy as np
from numba import njit

from molpipe.kernels.activations import tanh_bwd, tanh_fwd
from molpipe.kernels.dense import dense_bwd_params, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite


@njit(nogil=True, cache=True, error_model="numpy")
def embed_fwd(V, E, dst, W_v, b_v, W_e, b_e):
    """The non-finite count (of H and Ea), H : (n_atoms, d_h), Ea : (n_atoms, d_h), and for
    the backward B : (n_atoms, d_e) and deg : (n_atoms,) (in E's dtype)."""
    H = tanh_fwd(dense_fwd(V, W_v, b_v))
    n_atoms, d_e = V.shape[0], E.shape[1]
    B = np.zeros((n_atoms, d_e), dtype=E.dtype)
    count = np.zeros(n_atoms, dtype=np.int32)
    for e in range(dst.shape[0]):
        a = dst[e]
        count[a] += 1
        for k in range(d_e):
            B[a, k] += E[e, k]
    deg = count.astype(E.dtype)
    Ea = np.dot(B, W_e)
    d_h = Ea.shape[1]
    for a in range(n_atoms):
        for j in range(d_h):
            Ea[a, j] += deg[a] * b_e[j]
    return count_nonfinite(H) + count_nonfinite(Ea), H, Ea, B, deg


@njit(nogil=True, cache=True, error_model="numpy")
def embed_bwd(dH, dEa, V, B, deg, H, g_W_v, g_b_v, g_W_e, g_b_e):
    """Adds the parameter gradients to ``g_*``: ``dW_e = B^T dEa``, ``db_e = Σ_a deg[a] dEa[a]``
    (the bond encoder's only when ``dEa`` has rows: a network whose later stages drop Ea
    gives it none). Returns the non-finite count of the gathered gradients."""
    dW, db = dense_bwd_params(V, tanh_bwd(H, dH))
    n = add_count_nonfinite(g_W_v, dW) + add_count_nonfinite(g_b_v, db)
    if dEa.shape[0] > 0:
        dA = np.ascontiguousarray(dEa)
        dW = np.dot(B.T, dA)
        n_atoms, d_h = dA.shape
        db = np.zeros(d_h, dtype=dA.dtype)
        for a in range(n_atoms):
            for j in range(d_h):
                db[j] += deg[a] * dA[a, j]
        n += add_count_nonfinite(g_W_e, dW) + add_count_nonfinite(g_b_e, db)
    return n
