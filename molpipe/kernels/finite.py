"""Counting NaN and inf: the GIL-free kernels behind the non-finite checks.

Stage kernels count as they write (``count_nonfinite``, ``add_count_nonfinite``), while the
values are in the core's cache: a stage that reports those counts (``Stage.nonfinite``)
spares the worker a second pass over its outputs and gradients, and a second hand-over of the
GIL. For any other array the worker's check (``molpipe.runtime.nonfinite.all_finite``) calls
``count_nonfinite`` itself.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def count_nonfinite(X):
    """How many values of ``X`` (C-contiguous) are NaN or ±inf."""
    flat = X.reshape(-1)
    n = 0
    for i in range(flat.shape[0]):
        n += not np.isfinite(flat[i])
    return n


@njit(nogil=True, cache=True)
def add_count_nonfinite(g, d):
    """``g += d`` (C-contiguous, the same shape); returns how many values of ``g`` are then
    NaN or ±inf (a gathered gradient can overflow even when every part of it is finite)."""
    gf = g.reshape(-1)
    df = d.reshape(-1)
    n = 0
    for i in range(gf.shape[0]):
        v = gf[i] + df[i]
        gf[i] = v
        n += not np.isfinite(v)
    return n
