"""Deterministic parameter initialization (Glorot-uniform per d_in x d_out block)."""

from __future__ import annotations

import numpy as np


def glorot(rng: np.random.Generator, d_in: int, d_out: int, n_blocks: int = 1,
           dtype=np.float32) -> np.ndarray:
    """(d_in, n_blocks * d_out) weights, each (d_in, d_out) block ~ U(±sqrt(6 / (d_in + d_out)))."""
    limit = np.sqrt(6.0 / (d_in + d_out))
    return rng.uniform(-limit, limit, size=(d_in, n_blocks * d_out)).astype(dtype)


def zeros(d: int, dtype=np.float32) -> np.ndarray:
    """(d,) zero bias."""
    return np.zeros(d, dtype=dtype)
