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
    """
    one = H.dtype.type(1.0)
    n_atoms, d_h = H.shape
    H_out = np.empty_like(H)
    gates = np.zeros((n_atoms, 3 * d_h), dtype=H.dtype)
    for i in range(n_atoms):
        if atom_rounds[i] <= step:
            for j in range(d_h):
                H_out[i, j] = H[i, j]
            continue
        for j in range(d_h):
            r = sigmoid_s(MX[i, j] + HU[i, j])
            z = sigmoid_s(MX[i, d_h + j] + HU[i, d_h + j])
            n = tanh_s(MX[i, 2 * d_h + j] + r * HU[i, 2 * d_h + j])
            gates[i, j] = r
            gates[i, d_h + j] = z
            gates[i, 2 * d_h + j] = n
            H_out[i, j] = (one - z) * n + z * H[i, j]
    return H_out, gates


@njit(nogil=True, cache=True, error_model="numpy")
def gru_bwd(dH_out, H, HU, gates, atom_rounds, step):
    """Backward of ``gru_fwd``.

    Returns dMX, dHU : (n_atoms, 3 d_h) (zero on frozen atoms) and dH : (n_atoms, d_h), the
    direct gradient through ``z ⊙ H`` (or the identity on frozen atoms).
    """
    one = H.dtype.type(1.0)
    n_atoms, d_h = H.shape
    dMX = np.zeros((n_atoms, 3 * d_h), dtype=H.dtype)
    dHU = np.zeros((n_atoms, 3 * d_h), dtype=H.dtype)
    dH = np.empty_like(H)
    for i in range(n_atoms):
        if atom_rounds[i] <= step:
            for j in range(d_h):
                dH[i, j] = dH_out[i, j]
            continue
        for j in range(d_h):
            g = dH_out[i, j]
            r = gates[i, j]
            z = gates[i, d_h + j]
            n = gates[i, 2 * d_h + j]
            da_n = g * (one - z) * (one - n * n)        # through n = tanh(a_n)
            da_z = g * (H[i, j] - n) * z * (one - z)    # through z = σ(a_z)
            da_r = da_n * HU[i, 2 * d_h + j] * r * (one - r)
            dMX[i, j] = da_r
            dMX[i, d_h + j] = da_z
            dMX[i, 2 * d_h + j] = da_n
            dHU[i, j] = da_r
            dHU[i, d_h + j] = da_z
            dHU[i, 2 * d_h + j] = da_n * r
            dH[i, j] = g * z
    return dMX, dHU, dH
