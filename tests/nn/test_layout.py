"""W_m's old column-block layout: recognised only for W_m of the matching shape, converted block by block."""

import numpy as np
import pytest

from molpipe.nn.layout import blocks_from_columns, from_old_layout, is_old_layout


def test_blocks_from_columns_puts_each_column_block_in_its_slot():
    d_h, n_types = 3, 4
    cols = np.arange(d_h * n_types * d_h, dtype=np.float32).reshape(d_h, n_types * d_h)
    blocks = blocks_from_columns(cols, n_types)
    assert blocks.shape == (n_types, d_h, d_h) and blocks.flags.c_contiguous
    for t in range(n_types):
        np.testing.assert_array_equal(blocks[t], cols[:, t * d_h:(t + 1) * d_h])


@pytest.mark.parametrize("name, saved, shape, old", [
    ("message.W_m", (3, 12), (4, 3, 3), True),
    ("m.W_m", (3, 12), (4, 3, 3), True),            # an Adam slot of W_m
    ("message.W_m", (4, 3, 3), (4, 3, 3), False),   # already the new layout
    ("message.W_m", (3, 9), (4, 3, 3), False),      # wrong number of types
    ("message.W_x", (3, 12), (4, 3, 3), False),     # not W_m
    ("message.W_mm", (3, 12), (4, 3, 3), False),
])
def test_only_W_m_of_the_matching_shape_is_old_layout(name, saved, shape, old):
    assert is_old_layout(name, saved, shape) is old
    a = np.arange(np.prod(saved), dtype=np.float64).reshape(saved)
    got = from_old_layout(name, a, shape)
    if old:
        np.testing.assert_array_equal(got, blocks_from_columns(a, shape[0]))
    else:
        assert got is a                              # left for the caller's shape check
