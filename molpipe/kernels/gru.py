"""GRU cell update (PyTorch convention) from precomputed affine parts, with frozen atoms.

With ``MX = M W_x + b_x`` and ``HU = H U_h + b_h`` split in (r, z, n) blocks of width d_h:
``r = σ(MX_r + HU_r)``, ``z = σ(MX_z + HU_z)``, ``n = tanh(MX_n + r ⊙ HU_n)``,
``H' = (1 - z) ⊙ n + z ⊙ H``; atoms with ``atom_rounds <= step`` keep ``H``.
"""

import numpy as np
from numba import njit

from molpipe.kernels._math import sigmoid_s, tanh_s


@njit(nogil=True, cache=True, error_model="numpy")
def gru_fwd(MX, HU, H, atom_rounds, step):
    """GRU update of the atoms still active at ``step``.

    MX, HU : (n_atoms, 3 d_h); H : (n_atoms, d_h); atom_rounds : (n_atoms,).
    Returns H_out : (n_atoms, d_h) and gates : (n_atoms, 3 d_h) = [r, z, n] (zero when frozen).
    Gates go through per-row buffers so that every inner loop vectorizes; only the frozen
    rows of ``gates`` are zeroed (the active ones are written once, not cleared first).
    """
    one = H.dtype.type(1.0)
    n_atoms, d_h = H.shape
    H_out = np.empty_like(H)
    gates = np.empty((n_atoms, 3 * d_h), dtype=H.dtype)
    r = np.empty(d_h, dtype=H.dtype)
    z = np.empty(d_h, dtype=H.dtype)
    n = np.empty(d_h, dtype=H.dtype)
    for i in range(n_atoms):
        if atom_rounds[i] <= step:
            for j in range(d_h):
                H_out[i, j] = H[i, j]
            for j in range(3 * d_h):
                gates[i, j] = 0
            continue
        for j in range(d_h):
            r[j] = sigmoid_s(MX[i, j] + HU[i, j])
        for j in range(d_h):
            z[j] = sigmoid_s(MX[i, d_h + j] + HU[i, d_h + j])
        for j in range(d_h):
            n[j] = tanh_s(MX[i, 2 * d_h + j] + r[j] * HU[i, 2 * d_h + j])
        for j in range(d_h):
            H_out[i, j] = (one - z[j]) * n[j] + z[j] * H[i, j]
            gates[i, j] = r[j]
            gates[i, d_h + j] = z[j]
            gates[i, 2 * d_h + j] = n[j]
    return H_out, gates


@njit(nogil=True, cache=True, error_model="numpy")
def gru_bwd(dH_out, H, HU_n, gates, atom_rounds, step):
    """Backward of ``gru_fwd``; of ``HU`` it reads only the n block, ``HU_n = HU[:, 2 d_h:]``
    : (n_atoms, d_h) (what the update stage caches: a third of HU).

    Returns dMX, dHU : (n_atoms, 3 d_h) (zero on frozen atoms) and dH : (n_atoms, d_h), the
    direct gradient through ``z ⊙ H`` (or the identity on frozen atoms).
    ``da_n = g (1 - z)(1 - n^2)``, ``da_z = g (H - n) z (1 - z)``, ``da_r = da_n HU_n r (1 - r)``;
    dMX = [da_r, da_z, da_n], dHU = [da_r, da_z, da_n ⊙ r].
    """
    one = H.dtype.type(1.0)
    n_atoms, d_h = H.shape
    dMX = np.empty((n_atoms, 3 * d_h), dtype=H.dtype)
    dHU = np.empty((n_atoms, 3 * d_h), dtype=H.dtype)
    dH = np.empty_like(H)
    da_n = np.empty(d_h, dtype=H.dtype)   # per-row buffers: every inner loop vectorizes
    da_z = np.empty(d_h, dtype=H.dtype)
    da_r = np.empty(d_h, dtype=H.dtype)
    for i in range(n_atoms):
        if atom_rounds[i] <= step:
            for j in range(d_h):
                dH[i, j] = dH_out[i, j]
            for j in range(3 * d_h):
                dMX[i, j] = 0
                dHU[i, j] = 0
            continue
        for j in range(d_h):
            g = dH_out[i, j]
            z = gates[i, d_h + j]
            n = gates[i, 2 * d_h + j]
            da_n[j] = g * (one - z) * (one - n * n)
            da_z[j] = g * (H[i, j] - n) * z * (one - z)
            dH[i, j] = g * z
        for j in range(d_h):
            r = gates[i, j]
            da_r[j] = da_n[j] * HU_n[i, j] * r * (one - r)
        for j in range(d_h):
            dMX[i, j] = da_r[j]
            dMX[i, d_h + j] = da_z[j]
            dMX[i, 2 * d_h + j] = da_n[j]
        for j in range(d_h):
            dHU[i, j] = da_r[j]
            dHU[i, d_h + j] = da_z[j]
            dHU[i, 2 * d_h + j] = da_n[j] * gates[i, j]
    return dMX, dHU, dH
