"""Counting NaN and inf by their bits: a GIL-free kernel for the non-finite checks.

A float is NaN or ±inf exactly when its exponent bits are all ones. Counting such values
over the array's bits viewed as unsigned integers is an integer reduction, which LLVM
vectorizes (a float reduction it may not reorder), and the kernel releases the GIL, so the
check a worker makes on every training forward does not hold up the other workers
(``molpipe.runtime.nonfinite.all_finite`` picks the view and the mask).

Stage kernels count instead, as they write (``count_nonfinite``, ``add_count_nonfinite``):
a stage that reports those counts (``Stage.nonfinite``) spares the worker a second pass over
its outputs and gradients, and a second hand-over of the GIL.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True)
def count_exponent_all_ones(bits, mask):
    """How many of ``bits`` (a float array's 1-d unsigned-integer view) have ``mask`` all set."""
    n = 0
    for i in range(bits.shape[0]):
        n += (bits[i] & mask) == mask
    return n


@njit(nogil=True, cache=True)
def count_nonfinite(X):
    """How many values of ``X`` (C-contiguous) are NaN or ±inf: the count a stage kernel
    makes of what it just wrote, while it is still in the core's cache."""
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
