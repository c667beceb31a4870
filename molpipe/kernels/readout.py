"""The readout stage's forward and backward, each as one GIL-free call (see ``rounds``).

``G = σ(H W_g + X U_g + b_g)``, ``J = tanh(H W_j + X U_j + b_j)`` (``X``: the atoms' input
features, read directly when ``U_g``, ``U_j`` are not zero-size, as chemprop's ``W_o`` reads
them beside the messages); with attention ``α = softmax_mol(H w_a)``
(no bias: a softmax forgets shifts), else ``α = 1``; ``S[m] = Σ_{a ∈ m} α[a] G[a] ⊙ J[a]``; ``h[m] = [C[m, k] S[m]]_k``
(the aggregation's channels, ``pool.channels_fwd``), ``Z = relu((h ⊙ M_h) W_1 + b_1)``,
``Y = (Z ⊙ M_z) W_2 + b_2``. ``M_h``, ``M_z`` are dropout masks (zero-size arrays: none);
a zero-size ``w_a`` means no attention. Like the round kernels, each returns first how many
NaN/inf values it made.
"""

import numpy as np
from numba import njit

from molpipe.kernels.activations import (relu_bwd, relu_fwd, sigmoid_bwd, sigmoid_fwd, tanh_bwd,
                                         tanh_fwd)
from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite
from molpipe.kernels.pool import (attention_bwd, attention_fwd, channels_bwd, channels_fwd,
                                  mask_bwd, mask_fwd, weighted_gated_sum_bwd,
                                  weighted_gated_sum_fwd)


@njit(nogil=True, cache=True, error_model="numpy")
def readout_fwd(H, X, W_g, U_g, b_g, W_j, U_j, b_j, w_a, W_1, b_1, W_2, b_2, atom_mol, n_mols,
                C, M_h, M_z):
    """The non-finite count of Y, Y : (n_mols, n_targets), and what the backward needs:
    G, J, α, h (masked), Z, Z masked."""
    pre_g = dense_fwd(H, W_g, b_g)
    pre_j = dense_fwd(H, W_j, b_j)
    if U_g.shape[0] > 0:
        pre_g += np.dot(X, U_g)
        pre_j += np.dot(X, U_j)
    G = sigmoid_fwd(pre_g)
    J = tanh_fwd(pre_j)
    if w_a.shape[0] > 0:
        alpha = attention_fwd(np.dot(H, w_a)[:, 0].copy(), atom_mol, n_mols)
    else:
        alpha = np.ones(H.shape[0], dtype=H.dtype)
    h = channels_fwd(weighted_gated_sum_fwd(alpha, G, J, atom_mol, n_mols), C)
    if M_h.size > 0:
        h = mask_fwd(h, M_h)
    Z = relu_fwd(dense_fwd(h, W_1, b_1))
    Zm = mask_fwd(Z, M_z) if M_z.size > 0 else Z
    Y = dense_fwd(Zm, W_2, b_2)
    return count_nonfinite(Y), Y, G, J, alpha, h, Z, Zm


@njit(nogil=True, cache=True, error_model="numpy")
def readout_bwd(dY, H, X, G, J, alpha, h, Z, Zm, W_g, W_j, w_a, W_1, W_2,
                g_W_g, g_U_g, g_b_g, g_W_j, g_U_j, g_b_j, g_w_a, g_W_1, g_b_1, g_W_2, g_b_2,
                atom_mol, C, M_h, M_z):
    """Backward of ``readout_fwd``; adds the parameter gradients to ``g_*``; returns the
    non-finite count (dH and the gathered gradients) and dH."""
    dZ, dW, db = dense_bwd(Zm, W_2, np.ascontiguousarray(dY))
    n = add_count_nonfinite(g_W_2, dW) + add_count_nonfinite(g_b_2, db)
    if M_z.size > 0:
        dZ = mask_bwd(dZ, M_z)
    dh, dW, db = dense_bwd(h, W_1, relu_bwd(Z, dZ))
    n += add_count_nonfinite(g_W_1, dW) + add_count_nonfinite(g_b_1, db)
    if M_h.size > 0:
        dh = mask_bwd(dh, M_h)
    dalpha, dG, dJ = weighted_gated_sum_bwd(channels_bwd(dh, C), alpha, G, J, atom_mol)
    dpre_g, dpre_j = sigmoid_bwd(G, dG), tanh_bwd(J, dJ)
    dH, dW, db = dense_bwd(H, W_g, dpre_g)
    n += add_count_nonfinite(g_W_g, dW) + add_count_nonfinite(g_b_g, db)
    dH_j, dW, db = dense_bwd(H, W_j, dpre_j)
    n += add_count_nonfinite(g_W_j, dW) + add_count_nonfinite(g_b_j, db)
    if g_U_g.shape[0] > 0:
        n += add_count_nonfinite(g_U_g, np.dot(X.T, dpre_g))
        n += add_count_nonfinite(g_U_j, np.dot(X.T, dpre_j))
    if w_a.shape[0] > 0:
        de = attention_bwd(dalpha, alpha, atom_mol, C.shape[0]).reshape(-1, 1)
        n += add_count_nonfinite(g_w_a, np.dot(H.T, de))
        dH_j += np.dot(de, w_a.T)
    n += add_count_nonfinite(dH, dH_j)
    return n, dH
