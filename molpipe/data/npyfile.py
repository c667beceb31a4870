"""Append-only ``.npy`` files: arrays streamed to disk chunk by chunk, never held whole, and
the header rewritten in place at the end (no copy of the data).

The header has a fixed size (``HEADER`` bytes, room for any shape), so a file can be cut back
to a committed length and appended to again (a resumed build).
"""

from __future__ import annotations

import os
from pathlib import Path

import numpy as np

HEADER = 128
_MAGIC = b"\x93NUMPY\x01\x00"


def npy_header(dtype, shape: tuple[int, ...]) -> bytes:
    """A version 1.0 ``.npy`` header of exactly ``HEADER`` bytes."""
    text = repr({"descr": np.lib.format.dtype_to_descr(np.dtype(dtype)), "fortran_order": False,
                 "shape": tuple(int(s) for s in shape)})
    room = HEADER - len(_MAGIC) - 2
    body = text.encode("latin1").ljust(room - 1) + b"\n"
    if len(body) != room:
        raise ValueError(f"shape {shape} does not fit a {HEADER}-byte npy header")
    return _MAGIC + len(body).to_bytes(2, "little") + body


class NpyAppender:
    """Write one ``.npy`` file by appending arrays along axis 0 (constant memory).

    ``length`` (rows) may name a committed length of an existing file: the file is cut back
    to it and appended to (a resumed build).
    """

    def __init__(self, path: Path, dtype, tail_shape: tuple[int, ...] = (), length: int = 0):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.tail_shape = tuple(tail_shape)
        self.row_bytes = self.dtype.itemsize * int(np.prod(self.tail_shape, dtype=np.int64))
        self.n = int(length)
        if self.n:
            self._f = open(self.path, "r+b")
            self._f.truncate(HEADER + self.n * self.row_bytes)
            self._f.seek(0, os.SEEK_END)
        else:
            self._f = open(self.path, "wb")
            self._f.write(npy_header(self.dtype, (0, *self.tail_shape)))

    def append(self, a: np.ndarray) -> None:
        """Append ``a``: (k, *tail_shape), cast to the file's dtype."""
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape[1:] != self.tail_shape:
            raise ValueError(f"{self.path.name}: expected (k, {self.tail_shape}), got {a.shape}")
        self._f.write(a.data)
        self.n += a.shape[0]

    def flush(self, sync: bool = False) -> None:
        self._f.flush()
        if sync:
            os.fsync(self._f.fileno())

    def close(self) -> None:
        """Rewrite the header with the final shape, in place."""
        self._f.seek(0)
        self._f.write(npy_header(self.dtype, (self.n, *self.tail_shape)))
        self._f.close()

    def abandon(self) -> None:
        """Close without finishing the header (the build stops; the journal keeps the length)."""
        self._f.close()
