"""Append-only ``.npy`` writer: arrays streamed to disk chunk by chunk, never held whole."""

from __future__ import annotations

import os
import shutil
from pathlib import Path

import numpy as np


class NpyAppender:
    """Write one ``.npy`` file by appending arrays along axis 0 (constant memory)."""

    def __init__(self, path: Path, dtype, tail_shape: tuple[int, ...] = ()):
        self.path = Path(path)
        self.dtype = np.dtype(dtype)
        self.tail_shape = tuple(tail_shape)
        self.n = 0
        self._raw_path = self.path.with_suffix(".raw")
        self._raw = open(self._raw_path, "wb")

    def append(self, a: np.ndarray) -> None:
        """Append ``a``: (k, *tail_shape), cast to the file's dtype."""
        a = np.ascontiguousarray(a, dtype=self.dtype)
        if a.shape[1:] != self.tail_shape:
            raise ValueError(f"{self.path.name}: expected (k, {self.tail_shape}), got {a.shape}")
        self._raw.write(a.tobytes())
        self.n += a.shape[0]

    def close(self) -> None:
        """Write the ``.npy`` header, then the appended bytes; remove the scratch file."""
        self._raw.close()
        header = {"descr": np.lib.format.dtype_to_descr(self.dtype), "fortran_order": False,
                  "shape": (self.n, *self.tail_shape)}
        with open(self.path, "wb") as out, open(self._raw_path, "rb") as raw:
            np.lib.format.write_array_header_2_0(out, header)
            shutil.copyfileobj(raw, out, 1 << 22)
        os.remove(self._raw_path)
