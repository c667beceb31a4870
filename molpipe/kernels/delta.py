"""Parameter deltas as bfloat16 (the upper 16 bits of a float32) for the replica exchange.

A float32 parameter's change travels as half the bytes: ``encode`` rounds ``p - base`` to
bfloat16 (to nearest, ties to even) and moves ``base`` by exactly what was sent, so the
rounding error stays in ``p - base`` and goes with the next delta (error feedback: nothing
is lost, a 2^-9 relative part of a change arrives one send later). ``add`` applies a
received delta to a parameter and its base. Flat (1-d, contiguous) arrays; in place.
"""

import numpy as np
from numba import njit

_16 = np.uint32(16)


@njit(nogil=True, cache=True)
def encode(p, base, q):
    """``q = bf16(p - base)``; ``base += float32(q)`` (float32 ``p``, ``base``; uint16 ``q``)."""
    for i in range(p.shape[0]):
        b = np.float32(p[i] - base[i]).view(np.uint32)
        r = np.uint32((b + np.uint32(0x7FFF) + ((b >> _16) & np.uint32(1))) >> _16)
        q[i] = np.uint16(r)
        base[i] += np.uint32(r << _16).view(np.float32)


@njit(nogil=True, cache=True)
def add(p, base, q):
    """``p += float32(q)``; ``base += float32(q)``."""
    for i in range(p.shape[0]):
        d = np.uint32(np.uint32(q[i]) << _16).view(np.float32)
        p[i] += d
        base[i] += d


@njit(nogil=True, cache=True)
def decode(q):
    """The float32 values of bfloat16 bits ``q`` (records, tests)."""
    out = np.empty(q.shape[0], dtype=np.float32)
    for i in range(q.shape[0]):
        out[i] = np.uint32(np.uint32(q[i]) << _16).view(np.float32)
    return out
