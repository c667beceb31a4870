"""Reading untrusted ``.npz`` files: every header checked before a byte of data is allocated.

``np.load(..., allow_pickle=False)`` already refuses pickled (object) arrays, but it trusts
each member's header: a 200-byte file may declare a (10**12,) array and ``np.load`` tries
to allocate it before it notices the data is missing. ``inspect_npz`` reads only the zip
directory and the ``.npy`` headers; ``load_npz`` loads after ``inspect_npz`` passed.
"""

from __future__ import annotations

import hashlib
import os
import re
import stat
import zipfile
from pathlib import Path

import numpy as np

NUMERIC_KINDS = "fiub"
# member names: printable, relative, no "..": names are only dict keys, never paths written
SAFE_NAME = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_./-]{0,254}\.npy")   # float, signed and unsigned integer, bool: never object/void/str


class NpzError(ValueError):
    """An npz file refused before loading; the message names the file and the reason."""


def regular_file(path: Path, max_bytes: int) -> int:
    """Size of ``path``, refused unless it is a regular file (not a symlink) of at most ``max_bytes``."""
    try:
        st = os.lstat(path)
    except FileNotFoundError:
        raise NpzError(f"{path}: missing") from None
    if stat.S_ISLNK(st.st_mode):
        raise NpzError(f"{path}: is a symbolic link (refused: a model reads only its own files)")
    if not stat.S_ISREG(st.st_mode):
        raise NpzError(f"{path}: not a regular file")
    if st.st_size > max_bytes:
        raise NpzError(f"{path}: {st.st_size} bytes, more than the {max_bytes} allowed")
    return st.st_size


def _header(f) -> tuple[tuple[int, ...], np.dtype, int]:
    """(shape, dtype, header length) of the ``.npy`` stream ``f``, data unread."""
    major, minor = np.lib.format.read_magic(f)
    if (major, minor) == (1, 0):
        shape, fortran, dtype = np.lib.format.read_array_header_1_0(f, max_header_size=10000)
    elif (major, minor) in ((2, 0), (3, 0)):
        shape, fortran, dtype = np.lib.format.read_array_header_2_0(f, max_header_size=10000)
    else:
        raise ValueError(f"unknown .npy version {major}.{minor}")
    return tuple(int(n) for n in shape), np.dtype(dtype), f.tell()


def inspect_npz(path: str | Path, max_bytes: int) -> dict[str, tuple[tuple[int, ...], np.dtype]]:
    """``{name: (shape, dtype)}`` of every array in ``path``, read from headers only.

    Refuses (NpzError) a symlink, a file over ``max_bytes``, a file that is not a zip, a
    member that is not ``<name>.npy``, duplicate names, a non-numeric dtype (object arrays
    are pickles), and a header whose declared size differs from the member's real size
    (truncated, padded, or a huge shape over little data).
    """
    path = Path(path)
    regular_file(path, max_bytes)
    out: dict[str, tuple[tuple[int, ...], np.dtype]] = {}
    try:
        with zipfile.ZipFile(path) as z:
            for info in z.infolist():
                if not SAFE_NAME.fullmatch(info.filename) or ".." in info.filename.split("/"):
                    raise NpzError(f"{path}: member {info.filename!r} is not a plain <name>.npy")
                name = info.filename[:-4]
                if name in out:
                    raise NpzError(f"{path}: array {name!r} appears twice")
                if info.file_size > max_bytes:
                    raise NpzError(f"{path}: array {name!r} declares {info.file_size} bytes")
                with z.open(info) as f:
                    try:
                        shape, dtype, n_header = _header(f)
                    except (ValueError, EOFError, OSError) as e:
                        raise NpzError(f"{path}: array {name!r} has a bad header ({e})") from None
                if dtype.kind not in NUMERIC_KINDS or dtype.hasobject:
                    raise NpzError(f"{path}: array {name!r} has dtype {dtype} (only numbers are "
                                   "read; object arrays would need unpickling)")
                if any(n < 0 for n in shape):
                    raise NpzError(f"{path}: array {name!r} has a negative dimension {shape}")
                declared = int(np.prod(shape, dtype=object)) * dtype.itemsize
                if declared != info.file_size - n_header:
                    raise NpzError(f"{path}: array {name!r} declares shape {shape} ({declared} "
                                   f"bytes) but holds {info.file_size - n_header} bytes")
                out[name] = (shape, dtype)
    except zipfile.BadZipFile as e:
        raise NpzError(f"{path}: not a valid npz/zip file ({e}); truncated or corrupt") from None
    except OSError as e:
        raise NpzError(f"{path}: unreadable ({e})") from None
    return out


def load_npz(path: str | Path, max_bytes: int) -> dict[str, np.ndarray]:
    """Every array of ``path`` after ``inspect_npz`` accepted it; never unpickles."""
    inspect_npz(path, max_bytes)
    try:
        with np.load(path, allow_pickle=False) as z:
            return {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError, zipfile.BadZipFile) as e:
        raise NpzError(f"{path}: unreadable ({e})") from None


def sha256_file(path: str | Path) -> str:
    """Hex sha256 of a file's bytes, read in 1 MiB blocks."""
    h = hashlib.sha256()
    with open(path, "rb") as f:
        while block := f.read(1 << 20):
            h.update(block)
    return h.hexdigest()
