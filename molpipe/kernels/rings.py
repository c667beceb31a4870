"""Ring pooling: rings as super-nodes (mean over members) and broadcast back to members;
the ring stage's forward and backward composed of them."""

import numpy as np
from numba import njit

from molpipe.kernels.activations import tanh_bwd, tanh_fwd
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite


@njit(nogil=True, cache=True, error_model="numpy")
def ring_pool_fwd(H, ring_atoms, ring_offsets):
    """``R[r] = mean(H[ring_atoms[ring_offsets[r]:ring_offsets[r+1]]])``; R: (n_rings, d_h)."""
    n_rings = ring_offsets.shape[0] - 1
    d_h = H.shape[1]
    R = np.zeros((n_rings, d_h), dtype=H.dtype)
    for r in range(n_rings):
        a0 = ring_offsets[r]
        a1 = ring_offsets[r + 1]
        for k in range(a0, a1):
            a = ring_atoms[k]
            for j in range(d_h):
                R[r, j] += H[a, j]
        if a1 > a0:
            inv = H.dtype.type(1.0) / H.dtype.type(a1 - a0)
            for j in range(d_h):
                R[r, j] *= inv
    return R


@njit(nogil=True, cache=True, error_model="numpy")
def ring_pool_bwd(dR, ring_atoms, ring_offsets, n_atoms):
    """Backward of ``ring_pool_fwd``: every member gets ``dR[r] / size(r)``; dH: (n_atoms, d_h)."""
    n_rings, d_h = dR.shape
    dH = np.zeros((n_atoms, d_h), dtype=dR.dtype)
    for r in range(n_rings):
        a0 = ring_offsets[r]
        a1 = ring_offsets[r + 1]
        if a1 == a0:
            continue
        inv = dR.dtype.type(1.0) / dR.dtype.type(a1 - a0)
        for k in range(a0, a1):
            a = ring_atoms[k]
            for j in range(d_h):
                dH[a, j] += dR[r, j] * inv
    return dH


@njit(nogil=True, cache=True, error_model="numpy")
def ring_broadcast_fwd(H, Rt, ring_atoms, ring_offsets):
    """``H_out[a] = H[a] + sum over rings r containing a of Rt[r]``; H_out: (n_atoms, d_h)."""
    H_out = H.copy()
    n_rings, d_h = Rt.shape
    for r in range(n_rings):
        for k in range(ring_offsets[r], ring_offsets[r + 1]):
            a = ring_atoms[k]
            for j in range(d_h):
                H_out[a, j] += Rt[r, j]
    return H_out


@njit(nogil=True, cache=True, error_model="numpy")
def ring_broadcast_bwd(dH_out, ring_atoms, ring_offsets):
    """Backward of ``ring_broadcast_fwd``: ``dH = dH_out``, ``dRt[r] = sum over members of dH_out``."""
    n_rings = ring_offsets.shape[0] - 1
    d_h = dH_out.shape[1]
    dRt = np.zeros((n_rings, d_h), dtype=dH_out.dtype)
    for r in range(n_rings):
        for k in range(ring_offsets[r], ring_offsets[r + 1]):
            a = ring_atoms[k]
            for j in range(d_h):
                dRt[r, j] += dH_out[a, j]
    return dH_out.copy(), dRt


@njit(nogil=True, cache=True, error_model="numpy")
def ring_stage_fwd(H, W_r, b_r, ring_atoms, ring_offsets):
    """The ring stage's forward as one GIL-free call (see ``rounds``): ``R`` the rings' mean
    states, ``Rt = tanh(R W_r + b_r)``, ``H_out = H + Rt`` broadcast to the members.

    Returns the non-finite count of H_out, H_out, and what the backward needs: R, Rt.
    """
    R = ring_pool_fwd(H, ring_atoms, ring_offsets)
    Rt = tanh_fwd(dense_fwd(R, W_r, b_r))
    H_out = ring_broadcast_fwd(H, Rt, ring_atoms, ring_offsets)
    return count_nonfinite(H_out), H_out, R, Rt


@njit(nogil=True, cache=True, error_model="numpy")
def ring_stage_bwd(dH_out, R, Rt, W_r, g_W_r, g_b_r, ring_atoms, ring_offsets):
    """Backward of ``ring_stage_fwd``; adds the W_r, b_r gradients to ``g_*``; returns the
    non-finite count (dH and the gathered gradients) and dH."""
    dH, dRt = ring_broadcast_bwd(np.ascontiguousarray(dH_out), ring_atoms, ring_offsets)
    dR, dW, db = dense_bwd(R, W_r, tanh_bwd(Rt, dRt))
    n = add_count_nonfinite(g_W_r, dW) + add_count_nonfinite(g_b_r, db)
    n += add_count_nonfinite(dH, ring_pool_bwd(dR, ring_atoms, ring_offsets, dH.shape[0]))
    return n, dH
