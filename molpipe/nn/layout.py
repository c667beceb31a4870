"""Arrays saved in an older layout, read into today's: W_m's per-bond-type blocks.

The message weights W_m were first one (d_h, n_types d_h) array of column blocks; they are
now (n_types, d_h, d_h). Models, checkpoints and the optimizers' slots written by earlier
versions hold the old layout; whatever loads them (``Network.load_state_dict``, the optimizers'
``load_state_dict``, ``load_model``'s header check) asks here.
"""

from __future__ import annotations

import numpy as np


def blocks_from_columns(a: np.ndarray, n_types: int) -> np.ndarray:
    """(d_h, n_types d_h) column blocks (W_m's layout before it became per-type blocks) as a
    contiguous (n_types, d_h, d_h) array: block t is ``a[:, t d_h:(t+1) d_h]``."""
    d_h = a.shape[0]
    return np.ascontiguousarray(a.reshape(d_h, n_types, d_h).transpose(1, 0, 2))


def from_old_layout(name: str, a: np.ndarray, shape: tuple) -> np.ndarray:
    """``a``, loaded for an array of ``shape`` named ``name``, in the current layout.

    ``W_m`` (name ``....W_m``: a network's parameter or an optimizer's slot for it) saved as
    (d_h, n_types d_h) column blocks, before it became (n_types, d_h, d_h), is converted
    (``blocks_from_columns``); any other array is returned as it is, for the caller's shape
    check to report a mismatch.
    """
    a = np.asarray(a)
    if is_old_layout(name, a.shape, shape):
        return blocks_from_columns(a, shape[0])
    return a


def is_old_layout(name: str, saved_shape: tuple, shape: tuple) -> bool:
    """Whether an array of ``saved_shape`` is W_m's old layout for W_m of ``shape``."""
    return (name.rsplit(".", 1)[-1] == "W_m" and len(shape) == 3 and shape[1] == shape[2]
            and tuple(saved_shape) == (shape[1], shape[0] * shape[2]))
