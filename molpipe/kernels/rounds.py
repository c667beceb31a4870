"""A propagation round's two halves, each forward and each backward as one GIL-free call.

A worker thread takes the GIL back every time a kernel returns, and while another worker
holds it, it waits (up to the switch interval). Composing a half's kernels here (dense and
typed messages for the message half, dense and GRU for the update half), with the parameter
gradients added inside, turns the three to six kernel calls and numpy additions of a stage
call into one: one hand-over of the GIL per message instead of up to a dozen.
The arithmetic is the composed kernels', in the same order.

Every kernel also returns how many NaN/inf values it made (its outputs and, for a backward, the
gathered parameter gradients it added to), counted as they are written: the worker's
non-finite check then needs no second pass over them (``Stage.nonfinite``).
"""

import numpy as np
from numba import njit

from molpipe.kernels.dense import dense_bwd, dense_fwd
from molpipe.kernels.finite import add_count_nonfinite, count_nonfinite
from molpipe.kernels.gru import gru_bwd, gru_fwd
from molpipe.kernels.typed_message import pair_plan, typed_message_bwd, typed_message_fwd


@njit(nogil=True, cache=True, error_model="numpy")
def message_half_fwd(H, Ea, W_m, W_x, b_x, src, dst, etype, n_types):
    """``MX = M W_x + b_x`` with ``M`` the typed edge messages (``typed_message_fwd``) added to
    ``Ea``, the bond encodings summed at every atom (the bond part of each atom's message, the
    same every round).

    Returns the non-finite count of MX, MX, and what the backward needs: M, S and the pair
    plan (pair_atom, type_offsets, edge_pair).
    """
    pair_atom, type_offsets, edge_pair = pair_plan(dst, etype, H.shape[0], n_types)
    M, S = typed_message_fwd(H, Ea, W_m, src, pair_atom, type_offsets, edge_pair)
    MX = dense_fwd(M, W_x, b_x)
    return count_nonfinite(MX), MX, M, S, pair_atom, type_offsets, edge_pair


@njit(nogil=True, cache=True, error_model="numpy")
def message_half_bwd(dMX, dH_in, dEa_in, M, S, W_m, W_x, g_W_m, g_W_x, g_b_x, src,
                     pair_atom, type_offsets, edge_pair):
    """Backward of ``message_half_fwd``; adds the W_m, W_x, b_x gradients to ``g_*``
    (``g_W_m`` shaped as W_m, (n_types, d_h, d_h)).

    ``dH_in`` and ``dEa_in`` are gradients reaching H and Ea by other ways (added to the
    message's; ``dEa_in`` without rows: none). Returns the non-finite count, dH, dEa (this
    round's ``dEa`` is ``dM``, the gradient of the messages).
    """
    dM, dW, db = dense_bwd(M, W_x, np.ascontiguousarray(dMX))
    n = add_count_nonfinite(g_W_x, dW) + add_count_nonfinite(g_b_x, db)
    dH, dW = typed_message_bwd(dM, S, W_m, src, pair_atom, type_offsets, edge_pair)
    n += add_count_nonfinite(g_W_m, dW)
    n += add_count_nonfinite(dH, dH_in)
    dEa = dM
    if dEa_in.shape[0] > 0:
        n += add_count_nonfinite(dEa, dEa_in)
    else:
        n += count_nonfinite(dEa)
    return n, dH, dEa


@njit(nogil=True, cache=True, error_model="numpy")
def update_half_fwd(H, MX, U_h, b_h, atom_rounds, step):
    """GRU update ``H_out`` from ``HU = H U_h + b_h`` and ``MX``; returns the non-finite
    count of H_out, H_out, and what the backward needs: ``HU_n = HU[:, 2 d_h:]`` (the n
    block, the only part of HU the backward reads, copied so that the rest is freed: a
    cache of (n_atoms, 5 d_h) per round instead of 7 d_h), gates."""
    HU = dense_fwd(H, U_h, b_h)
    H_out, gates = gru_fwd(MX, HU, H, atom_rounds, step)
    HU_n = HU[:, 2 * H.shape[1]:].copy()
    return count_nonfinite(H_out), H_out, HU_n, gates


@njit(nogil=True, cache=True, error_model="numpy")
def update_half_bwd(dH_out, H, HU_n, gates, U_h, g_U_h, g_b_h, atom_rounds, step):
    """Backward of ``update_half_fwd``; adds the U_h, b_h gradients to ``g_*``.

    Returns the non-finite count, dH (through the GRU's ``z ⊙ H`` and through ``HU``), dMX.
    """
    dMX, dHU, dH = gru_bwd(np.ascontiguousarray(dH_out), H, HU_n, gates, atom_rounds, step)
    dH_u, dW, db = dense_bwd(H, U_h, dHU)
    n = add_count_nonfinite(g_U_h, dW) + add_count_nonfinite(g_b_h, db)
    n += add_count_nonfinite(dH, dH_u) + count_nonfinite(dMX)
    return n, dH, dMX
