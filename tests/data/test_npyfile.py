"""Append-only .npy files: the header rewritten in place, a committed length resumed."""

import numpy as np
import pytest

from molpipe.data.npyfile import HEADER, NpyAppender, npy_header


@pytest.mark.parametrize("dtype, tail", [(np.uint8, (8,)), (np.float32, (3,)), (np.int64, ()),
                                         (np.bool_, ())])
def test_append_then_close_is_a_plain_npy(tmp_path, dtype, tail):
    rng = np.random.default_rng(0)
    parts = [(rng.random((k, *tail)) * 100).astype(dtype) for k in (3, 0, 5)]
    w = NpyAppender(tmp_path / "a.npy", dtype, tail)
    for p in parts:
        w.append(p)
    w.close()
    got = np.load(tmp_path / "a.npy", mmap_mode="r", allow_pickle=False)
    assert got.dtype == dtype and np.array_equal(got, np.concatenate(parts))
    assert (tmp_path / "a.npy").stat().st_size == HEADER + got.nbytes   # no copy, no scratch
    assert sorted(p.name for p in tmp_path.iterdir()) == ["a.npy"]


def test_resume_cuts_back_to_the_committed_length(tmp_path):
    w = NpyAppender(tmp_path / "a.npy", np.int32, (2,))
    w.append(np.arange(10, dtype=np.int32).reshape(5, 2))
    w.flush()
    w.append(np.full((3, 2), -1, np.int32))                  # written after the commit
    w.abandon()
    w = NpyAppender(tmp_path / "a.npy", np.int32, (2,), length=5)
    w.append(np.array([[7, 7]], np.int32))
    w.close()
    got = np.load(tmp_path / "a.npy")
    assert got.shape == (6, 2) and got[:5].ravel().tolist() == list(range(10))
    assert got[5].tolist() == [7, 7]


def test_header_has_room_for_any_shape_and_shapes_are_checked(tmp_path):
    assert len(npy_header(np.float32, (2**62, 2**31))) == HEADER
    with pytest.raises(ValueError, match="does not fit"):
        npy_header(np.float32, tuple(range(100)))
    w = NpyAppender(tmp_path / "x.npy", np.float32, (2,))
    with pytest.raises(ValueError, match="expected"):
        w.append(np.zeros((2, 3), np.float32))
    w.close()
    assert np.load(tmp_path / "x.npy").shape == (0, 2)
