"""The embed stage's forward and backward, each as one GIL-free call (see ``rounds``).

``H = tanh(V W_v + b_v)``, ``Eh = E W_e + b_e``; like the round kernels, each returns first
how many NaN/inf values it made.
"""

import numpy as np
from numba import njit

from molpipe.kernels.activations import tanh_bwd, tanh_fwd
from molpipe.kernels.dense import dense_bwd_params, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite


@njit(nogil=True, cache=True, error_model="numpy")
def embed_fwd(V, E, W_v, b_v, W_e, b_e):
    """The non-finite count, H : (n_atoms, d_h) and Eh : (n_edges, d_h)."""
    H = tanh_fwd(dense_fwd(V, W_v, b_v))
    Eh = dense_fwd(E, W_e, b_e)
    return count_nonfinite(H) + count_nonfinite(Eh), H, Eh


@njit(nogil=True, cache=True, error_model="numpy")
def embed_bwd(dH, dEh, V, E, H, g_W_v, g_b_v, g_W_e, g_b_e):
    """Adds the parameter gradients to ``g_*`` (the bond encoder's only when ``dEh`` has rows:
    an instance without bonds, or a network whose later stages drop Eh, gives it none).
    Returns the non-finite count of the gathered gradients."""
    dW, db = dense_bwd_params(V, tanh_bwd(H, dH))
    n = add_count_nonfinite(g_W_v, dW) + add_count_nonfinite(g_b_v, db)
    if dEh.shape[0] > 0:
        dW, db = dense_bwd_params(E, np.ascontiguousarray(dEh))
        n += add_count_nonfinite(g_W_e, dW) + add_count_nonfinite(g_b_e, db)
    return n
