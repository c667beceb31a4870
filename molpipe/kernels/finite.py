"""Counting NaN and inf by their bits: a GIL-free kernel for the non-finite checks.

A float is NaN or ±inf exactly when its exponent bits are all ones. Counting such values
over the array's bits viewed as unsigned integers is an integer reduction, which LLVM
vectorizes (a float reduction it may not reorder), and the kernel releases the GIL, so the
check a worker makes on every training forward does not hold up the other workers
(``molpipe.runtime.nonfinite.all_finite`` picks the view and the mask).
"""

from numba import njit


@njit(nogil=True, cache=True)
def count_exponent_all_ones(bits, mask):
    """How many of ``bits`` (a float array's 1-d unsigned-integer view) have ``mask`` all set."""
    n = 0
    for i in range(bits.shape[0]):
        n += (bits[i] & mask) == mask
    return n
