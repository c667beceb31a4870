"""The files of ``molpipe fingerprint``: SMILES files in (besides what ``molpipe predict``
reads), ``.npy`` and ``.csv`` out, each written beside its final name and renamed into place."""

from __future__ import annotations

import csv
import os
import secrets
from collections.abc import Iterator
from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError
from molpipe.data.npyfile import HEADER, npy_header
from molpipe.data.readers import SMI_SUFFIXES, smi_words
from molpipe.inference.files import InputFile, open_input

# -- input ----------------------------------------------------------------------------------

def open_molecules(path: str | Path, smiles_column: str | None = None) -> InputFile:
    """A CSV / SDF file as ``molpipe predict`` reads it (``files.open_input``), or a SMILES
    file (``.smi``, optionally gzip-compressed): columns ``smiles`` and ``name``."""
    path = Path(path)
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    if suffix.lower() not in SMI_SUFFIXES:
        return open_input(path, smiles_column)
    if not path.is_file():
        raise DataError(f"{path}: no such file; check the path")
    if smiles_column is not None:
        raise DataError(f"{path}: a SMILES file has no columns; leave out --smiles-column")
    return InputFile(path, ["smiles", "name"], _count_lines(path), _smi_rows(path))


def _count_lines(path: Path) -> int:
    from molpipe.data.text import open_binary

    with open_binary(path) as f:
        return sum(block.count(b"\n") for block in iter(lambda: f.read(1 << 20), b""))


def _smi_rows(path: Path) -> Iterator:
    """(fields [smiles, name], SMILES) per non-blank line; a first line whose first word is
    ``smiles`` (any case) is a header; lines starting with ``#`` are comments."""
    from molpipe.data.text import GZIP_ERRORS, gzip_error, open_text, utf8_error

    try:
        with open_text(path) as f:
            for n, line in enumerate(f):
                if (words := smi_words(line, n == 0)) is None:
                    continue
                name = words[1].strip() if len(words) > 1 else ""
                yield [words[0], name], words[0]
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from None


# -- output ---------------------------------------------------------------------------------

class NpyWriter:
    """A float32 ``.npy`` of ``d`` columns written row block by row block: its header is
    written for an unknown row count, padded to a fixed size, and rewritten at ``close``."""

    HEADER = HEADER                    # bytes, room for any shape (as npyfile writes them)

    def __init__(self, fh, d: int):
        self.fh, self.d, self.n = fh, d, 0
        fh.write(self._header(0))

    def _header(self, n: int) -> bytes:
        return npy_header("<f4", (n, self.d))

    def write(self, F: np.ndarray) -> None:
        self.fh.write(np.ascontiguousarray(F, "<f4").tobytes())
        self.n += len(F)

    def close(self) -> None:
        self.fh.flush()
        self.fh.seek(0)
        self.fh.write(self._header(self.n))
        self.fh.flush()


def errors_path(output: Path) -> Path:
    """Where a ``.npy``'s failed rows are listed: ``fp.npy`` -> ``fp.errors.csv``."""
    return output.with_name(output.stem + ".errors.csv")


def _temporary(path: Path) -> Path:
    return path.with_name(f".{path.name}.tmp-{os.getpid()}-{secrets.token_hex(4)}")


class OutputFiles:
    """Output files written beside their final names, renamed into place by ``commit``."""

    def __init__(self):
        self.pairs: list = []              # (handle, temporary path, final path)

    def open(self, final: Path, mode: str, **kw):
        tmp = _temporary(final)
        fh = open(tmp, mode, **kw)
        self.pairs.append((fh, tmp, final))
        return fh

    def flush(self) -> None:
        """Hand what was written so far to the operating system."""
        for fh, _, _ in self.pairs:
            fh.flush()

    def commit(self) -> None:
        for fh, _, _ in self.pairs:
            fh.close()
        for _, tmp, final in self.pairs:
            os.replace(tmp, final)

    def abort(self) -> None:
        for fh, tmp, _ in self.pairs:
            fh.close()
            tmp.unlink(missing_ok=True)


class NpySink:
    """Vectors into a ``.npy``, failed rows (row, input columns, reason) into a CSV."""

    def __init__(self, files: OutputFiles, out: Path, errors_out: Path, columns: list[str], d: int):
        self.npy = NpyWriter(files.open(out, "w+b"), d)
        fe = files.open(errors_out, "w", newline="", encoding="utf-8")
        self.errors = csv.writer(fe, lineterminator="\n")
        self.errors.writerow(["row", *columns, "error"])

    def write(self, first_row: int, fields: list, F: np.ndarray, errors: list[str]) -> None:
        self.npy.write(F)
        for k, (f, e) in enumerate(zip(fields, errors)):
            if e:
                self.errors.writerow([first_row + k, *f, e])

    def close(self) -> None:
        self.npy.close()


class CsvSink:
    """The input columns, ``fp_0`` ... ``fp_<d-1>`` (float32 to 9 digits: exact) and ``error``."""

    def __init__(self, files: OutputFiles, out: Path, columns: list[str], d: int):
        self.writer = csv.writer(files.open(out, "w", newline="", encoding="utf-8"),
                                 lineterminator="\n")
        ours = [f"fp_{j}" for j in range(d)] + ["error"]
        self.keep = [i for i, c in enumerate(columns) if c not in ours]
        self.d = d
        self.writer.writerow([columns[i] for i in self.keep] + ours)

    def write(self, first_row: int, fields: list, F: np.ndarray, errors: list[str]) -> None:
        for f, v, e in zip(fields, F, errors):
            cells = [""] * self.d if e else [f"{x:.9g}" for x in v.tolist()]
            self.writer.writerow([f[i] for i in self.keep] + cells + [e])

    def close(self) -> None:
        pass

