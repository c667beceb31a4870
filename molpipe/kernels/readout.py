"""The readout stage's forward and backward, each as one GIL-free call (see ``rounds``).

``G = σ(H W_g + b_g)``, ``J = tanh(H W_j + b_j)``, ``h_mol = scale ⊙ Σ_{a ∈ mol} G[a] ⊙ J[a]``
(``scale`` 1 / atom count with ``mean``, else 1), ``Z = relu(h_mol W_1 + b_1)``,
``Y = Z W_2 + b_2``. The arithmetic is the composed kernels', in the same order; like the
round kernels, each returns first how many NaN/inf values it made.
"""

import numpy as np
from numba import njit

from molpipe.kernels.activations import (relu_bwd, relu_fwd, sigmoid_bwd, sigmoid_fwd, tanh_bwd,
                                         tanh_fwd)
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite
from molpipe.kernels.segment import gated_sum_bwd, gated_sum_fwd


@njit(nogil=True, cache=True, error_model="numpy")
def _scale_rows(X, atom_mol):
    """``X[m] *= 1 / (atoms of molecule m)`` (at least one), in X's precision."""
    one = X.dtype.type(1.0)
    counts = np.zeros(X.shape[0], dtype=X.dtype)
    for a in range(atom_mol.shape[0]):
        counts[atom_mol[a]] += one
    for m in range(X.shape[0]):
        s = one / max(counts[m], one)
        for j in range(X.shape[1]):
            X[m, j] *= s


@njit(nogil=True, cache=True, error_model="numpy")
def readout_fwd(H, W_g, b_g, W_j, b_j, W_1, b_1, W_2, b_2, atom_mol, n_mols, mean):
    """The non-finite count of Y, Y : (n_mols, n_targets), and what the backward needs:
    G, J, h_mol, Z."""
    G = sigmoid_fwd(dense_fwd(H, W_g, b_g))
    J = tanh_fwd(dense_fwd(H, W_j, b_j))
    h_mol = gated_sum_fwd(G, J, atom_mol, n_mols)
    if mean:
        _scale_rows(h_mol, atom_mol)
    Z = relu_fwd(dense_fwd(h_mol, W_1, b_1))
    Y = dense_fwd(Z, W_2, b_2)
    return count_nonfinite(Y), Y, G, J, h_mol, Z


@njit(nogil=True, cache=True, error_model="numpy")
def readout_bwd(dY, H, G, J, h_mol, Z, W_g, W_j, W_1, W_2,
                g_W_g, g_b_g, g_W_j, g_b_j, g_W_1, g_b_1, g_W_2, g_b_2, atom_mol, mean):
    """Backward of ``readout_fwd``; adds the parameter gradients to ``g_*``; returns the
    non-finite count (dH and the gathered gradients) and dH."""
    dZ, dW, db = dense_bwd(Z, W_2, np.ascontiguousarray(dY))
    n = add_count_nonfinite(g_W_2, dW) + add_count_nonfinite(g_b_2, db)
    dh_mol, dW, db = dense_bwd(h_mol, W_1, relu_bwd(Z, dZ))
    n += add_count_nonfinite(g_W_1, dW) + add_count_nonfinite(g_b_1, db)
    if mean:
        _scale_rows(dh_mol, atom_mol)
    dG, dJ = gated_sum_bwd(dh_mol, G, J, atom_mol)
    dH, dW, db = dense_bwd(H, W_g, sigmoid_bwd(G, dG))
    n += add_count_nonfinite(g_W_g, dW) + add_count_nonfinite(g_b_g, db)
    dH_j, dW, db = dense_bwd(H, W_j, tanh_bwd(J, dJ))
    n += add_count_nonfinite(g_W_j, dW) + add_count_nonfinite(g_b_j, db)
    n += add_count_nonfinite(dH, dH_j)
    return n, dH
