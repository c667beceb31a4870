"""Directed-bond message passing (D-MPNN style): every directed bond ``e = (u -> v)`` carries a
hidden state, and a bond's message leaves out the bond back (no "tottering").

* ``bond_init``: ``P0 = [X[src], E] W_i + b_i``, ``H = relu(P0)``: (n_edges, d_h);
* ``bond_message``: ``S[a] = Σ_{e: dst[e]=a} H[e]``, ``M[e] = S[src[e]] - H[rev[e]]``,
  ``Z1 = M W_h1``: the first columns of the round's product ``M W_h``;
* ``bond_update``: ``Z2 = M W_h2``, ``H' = relu(P0 + [Z1, Z2])`` where the bond's molecule
  still runs (``edge_rounds > step``), else ``H`` unchanged;
* ``atomize``: ``A = relu([X, Σ_{e: dst[e]=a} H[e]] W_o + b_o)``: bonds back to atoms.

``W_h`` is split by columns between the message and the update halves, so that the two
workers running them share a round's work. Each function returns first how many NaN/inf
values it made (outputs; for a backward, the input gradients and gathered parameter
gradients), like the other stage kernels.
"""

import numpy as np
from numba import njit

from molpipe.kernels.activations import relu_bwd, relu_fwd
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite


@njit(nogil=True, cache=True)
def reverse_edges(src, dst, n_atoms):
    """rev: (n_edges,) int32, ``rev[e]`` the edge ``(dst[e] -> src[e])`` (-1 if there is none)."""
    n = src.shape[0]
    keys = src.astype(np.int64) * n_atoms + dst
    order = np.argsort(keys)
    ordered = keys[order]
    rev = np.full(n, -1, np.int32)
    for e in range(n):
        k = np.int64(dst[e]) * n_atoms + src[e]
        i = np.searchsorted(ordered, k)
        if i < n and ordered[i] == k:
            rev[e] = order[i]
    return rev


@njit(nogil=True, cache=True, error_model="numpy")
def _segment_sum(H, seg, n_seg):
    """``S[s] = Σ_{i: seg[i] = s} H[i]``."""
    S = np.zeros((n_seg, H.shape[1]), dtype=H.dtype)
    for i in range(H.shape[0]):
        s = seg[i]
        for j in range(H.shape[1]):
            S[s, j] += H[i, j]
    return S


@njit(nogil=True, cache=True, error_model="numpy")
def bond_init_fwd(X, E, src, W_i, b_i):
    """(non-finite count, H, P0, XE): ``XE = [X[src], E]``, ``P0 = XE W_i + b_i``,
    ``H = relu(P0)``."""
    n_e, d_v = src.shape[0], X.shape[1]
    XE = np.empty((n_e, d_v + E.shape[1]), dtype=X.dtype)
    for e in range(n_e):
        for j in range(d_v):
            XE[e, j] = X[src[e], j]
        for j in range(E.shape[1]):
            XE[e, d_v + j] = E[e, j]
    P0 = dense_fwd(XE, W_i, b_i)
    H = relu_fwd(P0)
    return count_nonfinite(H), H, P0, XE


@njit(nogil=True, cache=True, error_model="numpy")
def bond_init_bwd(dH, dP0_in, H, XE, g_W_i, g_b_i):
    """Backward of ``bond_init_fwd`` (``dP0_in``: the rounds' gradients of P0); adds the W_i,
    b_i gradients; returns the non-finite count."""
    dP0 = relu_bwd(H, dH)
    if dP0_in.shape[0] > 0:
        dP0 += dP0_in
    n = 0
    for k in range(dP0.shape[0]):
        for j in range(dP0.shape[1]):
            n += not np.isfinite(dP0[k, j])
    n += add_count_nonfinite(g_W_i, np.dot(XE.T, dP0))
    db = np.zeros(dP0.shape[1], dtype=dP0.dtype)
    for k in range(dP0.shape[0]):
        for j in range(dP0.shape[1]):
            db[j] += dP0[k, j]
    return n + add_count_nonfinite(g_b_i, db)


@njit(nogil=True, cache=True, error_model="numpy")
def bond_message_fwd(H, W_h1, src, dst, rev, n_atoms):
    """(non-finite count, M, Z1): ``M[e] = S[src[e]] - H[rev[e]]``, ``Z1 = M W_h1``."""
    S = _segment_sum(H, dst, n_atoms)
    M = np.empty_like(H)
    for e in range(H.shape[0]):
        r = rev[e]
        for j in range(H.shape[1]):
            M[e, j] = S[src[e], j] - (H[r, j] if r >= 0 else H.dtype.type(0.0))
    Z1 = np.dot(M, W_h1)
    return count_nonfinite(Z1), M, Z1


@njit(nogil=True, cache=True, error_model="numpy")
def bond_message_bwd(dZ1, dM_in, dH_in, M, W_h1, g_W_h1, src, dst, rev, n_atoms):
    """Backward of ``bond_message_fwd`` (``dM_in``: the update half's gradient of M, ``dH_in``
    that of H by other ways); adds the W_h1 gradient; returns (non-finite count, dH)."""
    n = add_count_nonfinite(g_W_h1, np.dot(M.T, dZ1))
    dM = np.dot(dZ1, W_h1.T)
    dM += dM_in
    dS = _segment_sum(dM, src, n_atoms)
    dH = dH_in.copy()
    for e in range(dM.shape[0]):
        a = dst[e]
        for j in range(dM.shape[1]):
            dH[e, j] += dS[a, j]
        r = rev[e]
        if r >= 0:
            for j in range(dM.shape[1]):
                dH[r, j] -= dM[e, j]
    return n + count_nonfinite(dH), dH


@njit(nogil=True, cache=True, error_model="numpy")
def bond_update_fwd(H, P0, M, Z1, W_h2, edge_rounds, step):
    """(non-finite count, H'): ``H' = relu(P0 + [Z1, M W_h2])`` on the bonds whose molecule
    runs this round (``edge_rounds > step``), ``H`` on the others."""
    Z2 = np.dot(M, W_h2)
    d1 = Z1.shape[1]
    zero = H.dtype.type(0.0)
    out = np.empty_like(H)
    for e in range(H.shape[0]):
        if edge_rounds[e] > step:
            for j in range(d1):
                v = P0[e, j] + Z1[e, j]
                out[e, j] = v if v > zero else zero
            for j in range(Z2.shape[1]):
                v = P0[e, d1 + j] + Z2[e, j]
                out[e, d1 + j] = v if v > zero else zero
        else:
            for j in range(H.shape[1]):
                out[e, j] = H[e, j]
    return count_nonfinite(out), out


@njit(nogil=True, cache=True, error_model="numpy")
def bond_update_bwd(dOut, dP0_in, out, M, W_h2, g_W_h2, edge_rounds, step, d1):
    """Backward of ``bond_update_fwd``; adds the W_h2 gradient; returns (non-finite count,
    dH (frozen bonds), dP0 (with ``dP0_in`` added), dZ1, dM)."""
    zero = out.dtype.type(0.0)
    n_e, d = out.shape
    dpre = np.zeros_like(out)
    dH = np.zeros_like(out)
    for e in range(n_e):
        if edge_rounds[e] > step:
            for j in range(d):
                dpre[e, j] = dOut[e, j] if out[e, j] > zero else zero
        else:
            for j in range(d):
                dH[e, j] = dOut[e, j]
    dZ2 = np.ascontiguousarray(dpre[:, d1:])
    n = add_count_nonfinite(g_W_h2, np.dot(M.T, dZ2))
    dM = np.dot(dZ2, W_h2.T)
    dZ1 = np.ascontiguousarray(dpre[:, :d1])
    dP0 = dpre
    if dP0_in.shape[0] > 0:
        dP0 += dP0_in
    return n + count_nonfinite(dP0) + count_nonfinite(dM) + count_nonfinite(dH), dH, dP0, dZ1, dM


@njit(nogil=True, cache=True, error_model="numpy")
def atomize_fwd(H, X, dst, W_o, b_o):
    """(non-finite count, A, XM): ``XM = [X, Σ_{e: dst[e]=a} H[e]]``, ``A = relu(XM W_o + b_o)``."""
    n_a, d_v = X.shape
    Ma = _segment_sum(H, dst, n_a)
    XM = np.empty((n_a, d_v + H.shape[1]), dtype=H.dtype)
    for a in range(n_a):
        for j in range(d_v):
            XM[a, j] = X[a, j]
        for j in range(H.shape[1]):
            XM[a, d_v + j] = Ma[a, j]
    A = relu_fwd(dense_fwd(XM, W_o, b_o))
    return count_nonfinite(A), A, XM


@njit(nogil=True, cache=True, error_model="numpy")
def atomize_bwd(dA, A, XM, W_o, g_W_o, g_b_o, dst, d_v):
    """Backward of ``atomize_fwd``; adds the W_o, b_o gradients; returns (non-finite count,
    dH) of the bond states."""
    dXM, dW, db = dense_bwd(XM, W_o, relu_bwd(A, dA))
    n = add_count_nonfinite(g_W_o, dW) + add_count_nonfinite(g_b_o, db)
    d_h = XM.shape[1] - d_v
    dH = np.empty((dst.shape[0], d_h), dtype=dA.dtype)
    for e in range(dst.shape[0]):
        a = dst[e]
        for j in range(d_h):
            dH[e, j] = dXM[a, d_v + j]
    return n + count_nonfinite(dH), dH
