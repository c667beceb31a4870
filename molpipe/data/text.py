"""Reading the text of a data file: gzip and UTF-8 (each failure a DataError naming the file
and the place), and its cells: numbers, NA markers, and the cells that are neither
(``NotNumbers``), so that a typo in a target is counted, not silently a missing label."""

from __future__ import annotations

import gzip
import io
import math
import zlib
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError

PEEK_ROWS = 200                         # rows looked at to guess numeric target columns
#: one input row: (1-based data row number, SMILES or Mol or the reason it is broken, targets
#: (n_targets,) float32 with NaN where missing or not a number). CSV rows count data rows
#: (not the header, not blank lines); SDF rows count records.
Row = tuple[int, "str | Chem.Mol | FeaturizationError", np.ndarray]

GZIP_MAGIC = b"\x1f\x8b"
NA = {"na", "n/a", "nan", "none", "null", "-", "?"}


def is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == GZIP_MAGIC


def open_binary(path: Path):
    """``path`` opened for binary reading, decompressed on the fly if it is gzip."""
    return gzip.open(path, "rb") if is_gzip(path) else open(path, "rb")


def open_text(path: Path, **kw) -> io.TextIOBase:
    """``path`` opened as UTF-8 text (BOM dropped), decompressed on the fly if it is gzip."""
    return io.TextIOWrapper(open_binary(path), encoding="utf-8-sig", **kw)


def gzip_error(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: corrupt or truncated gzip data ({err}); re-compress or "
                     "re-download the file")


GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def utf8_error(path: Path) -> DataError:
    """DataError naming the first line of ``path`` that is not valid UTF-8."""
    with open_binary(path) as f:
        for n, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return DataError(f"{path}: not UTF-8 text (line {n}, column {err.start + 1}); "
                                 "re-save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8")


def is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def not_a_number(text) -> bool:
    """Whether a target cell read as NaN is a value that is not a number: text that is not
    empty nor an NA marker (a Parquet cell that is not text never is)."""
    if not isinstance(text, str):
        return False
    text = text.strip()
    return bool(text) and text.lower() not in NA and not is_number(text)


def to_float(text: str | None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def numeric_columns(columns: list[str], records: list[dict[str, str]]) -> list[str]:
    """Named columns whose values (in ``records``) are mostly numbers, ignoring NA markers."""
    found = []
    for c in columns:
        values = [(r.get(c) or "").strip() for r in records]
        values = [v for v in values if v and v.lower() not in NA]
        n_num = sum(is_number(v) for v in values)
        if c.strip() and n_num and n_num >= 0.8 * len(values):
            found.append(c)
    return found


def match_name(name: str, available: list[str], path: Path, what: str) -> str:
    """The column called ``name`` (exact, else unique case-insensitive match)."""
    if name in available:
        return name
    folded = [c for c in available if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(repr(c) for c in available) or "none"
    raise DataError(f"{path}: no {what} {name!r}; available: {shown}")


def smiles_column_of(columns, chosen: str | None, path: Path, hint: str = "") -> str:
    """The SMILES column of a CSV or Parquet file: ``chosen`` (see ``match_name``), else the
    one column named ``smiles`` (any case); ``hint`` ends the message when there is none."""
    if chosen is not None:
        return match_name(chosen, list(columns), path, "SMILES column")
    found = [c for c in columns if c.strip().lower() == "smiles"]
    if len(found) > 1:
        raise DataError(f"{path}: several SMILES columns ({', '.join(map(repr, found))}); "
                        "name one with --smiles-column")
    if not found:
        shown = ", ".join(repr(c) for c in columns)
        raise DataError(f"{path}: no 'smiles' column; available: {shown}{hint}; "
                        "name one with --smiles-column")
    return found[0]


@dataclass
class NotNumbers:
    """Target cells read as NaN that were not empty, not an NA marker and not a number.

    Fields
    ------
    names : the targets, in the order of a row's targets.
    keep : how many first rows and values are kept per target.
    count : (n_targets,) cells per target.
    rows : per target, the first ``keep`` 1-based data rows (or SDF records) with such a cell.
    values : per target, those cells as read (stripped, cut at ``VALUE_CHARS`` characters).
    sink : called with (row, target, value) for every such cell, if given (the store's
        ``rejected_cells.csv``).
    """

    names: tuple[str, ...]
    keep: int = 5
    sink: object = None
    count: list[int] = field(init=False)
    rows: list[list[int]] = field(init=False)
    values: list[list[str]] = field(init=False)

    VALUE_CHARS = 80

    def __post_init__(self):
        self.names = tuple(self.names)
        self.count = [0] * len(self.names)
        self.rows = [[] for _ in self.names]
        self.values = [[] for _ in self.names]

    def check(self, j: int, row: int, text: str | None) -> None:
        """Note target ``j``'s cell ``text`` of ``row`` if it is a value that is not a number."""
        if not not_a_number(text):
            return
        text = text.strip()
        self.count[j] += 1
        cut = self.VALUE_CHARS
        text = text if len(text) <= cut else text[:cut - 1] + "…"
        if len(self.rows[j]) < self.keep:
            self.rows[j].append(row)
            self.values[j].append(text)
        if self.sink is not None:
            self.sink(row, self.names[j], text)

    def note(self, row: int, y: np.ndarray, cells) -> None:
        """Check the cells (indexable by target) of ``row`` whose target ``y`` came out NaN."""
        for j in np.flatnonzero(np.isnan(y)).tolist():
            self.check(j, row, cells[j])

    def as_dict(self) -> dict[str, dict]:
        """{target: {"count", "rows", "values"}} for the targets with such cells (else {})."""
        return {name: {"count": n, "rows": list(r), "values": list(v)}
                for name, n, r, v in zip(self.names, self.count, self.rows, self.values) if n}
