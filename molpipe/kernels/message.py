"""GGNN edge messages: ``M[dst[e]] += HW[src[e], etype[e] block] + Eh[e]`` (scatter-sum)."""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def message_fwd(HW, Eh, src, dst, etype, n_atoms):
    """Sum incoming messages per atom.

    HW : (n_atoms, n_types * d_h)  ``H [W_m[0] | ... | W_m[n_types-1]]``, a d_h block per type
    Eh : (n_edges, d_h)            edge embeddings
    src, dst, etype : (n_edges,)   edge endpoints and bond type
    Returns M : (n_atoms, d_h).
    """
    d_h = Eh.shape[1]
    M = np.zeros((n_atoms, d_h), dtype=HW.dtype)
    for e in range(src.shape[0]):
        s = src[e]
        t = dst[e]
        off = etype[e] * d_h
        for j in range(d_h):
            M[t, j] += HW[s, off + j] + Eh[e, j]
    return M


@njit(nogil=True, cache=True, error_model="numpy")
def message_bwd(dM, src, dst, etype, n_types):
    """Backward of ``message_fwd``: ``dHW[src[e], etype[e] block] += dM[dst[e]]``, ``dEh[e] = dM[dst[e]]``.

    Returns dHW : (n_atoms, n_types * d_h), dEh : (n_edges, d_h).
    """
    n_atoms, d_h = dM.shape
    n_edges = src.shape[0]
    dHW = np.zeros((n_atoms, n_types * d_h), dtype=dM.dtype)
    dEh = np.empty((n_edges, d_h), dtype=dM.dtype)
    for e in range(n_edges):
        s = src[e]
        t = dst[e]
        off = etype[e] * d_h
        for j in range(d_h):
            g = dM[t, j]
            dHW[s, off + j] += g
            dEh[e, j] = g
    return dHW, dEh
