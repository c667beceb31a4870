"""Is every value of an array finite? A GIL-free check by the exponent bits.

A float is NaN or ±inf exactly when its exponent bits are all ones. Counting such values
over the array's bits viewed as unsigned integers is an integer reduction, which LLVM
vectorizes (a float reduction it may not reorder), and the kernel releases the GIL, so the
check a worker makes on every training forward does not hold up the other workers.
"""

import numpy as np
from numba import njit

_EXPONENT = {np.dtype(np.float32): (np.uint32, np.uint32(0x7F800000)),
             np.dtype(np.float64): (np.uint64, np.uint64(0x7FF0000000000000))}


@njit(nogil=True, cache=True)
def _count_all_ones(bits, mask):
    n = 0
    for i in range(bits.shape[0]):
        n += (bits[i] & mask) == mask
    return n


def all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN and no inf (any float array; others are finite)."""
    exp = _EXPONENT.get(a.dtype)
    if exp is None or not a.flags.c_contiguous:
        return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())
    return _count_all_ones(a.reshape(-1).view(exp[0]), exp[1]) == 0
