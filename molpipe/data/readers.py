"""Streaming CSV and SDF readers: rows of (row number, SMILES or Mol, targets).

How hostile files are read (a rejected row goes to ``rejects.csv`` with its reason; a
``DataError`` stops the run with one line naming the file and what to do):

- gzip: ``.csv.gz`` / ``.sdf.gz`` (or any gzip file, by its magic bytes) are decompressed
  while streaming; a corrupt or cut gzip stream is a DataError.
- BOM, CRLF, quoted fields with commas or newlines: read as the CSV standard says.
- delimiter: ``,`` unless the header line has no comma but has ``;``, tab or ``|``: then
  the most frequent of those is used (``Table.delimiter``).
- duplicate column names in the header: DataError naming the duplicate.
- a data row with more or fewer fields than the header (a cut last line, an unquoted
  delimiter; trailing empty fields are ignored) or broken quoting (the file ends inside a quoted field): rejected,
  "row has 2 fields, the header 3" / "bad CSV row (...)". The rows around it still load.
  A cut inside the last, unquoted field of the last line cannot be told from a short value
  and is read as it stands.
- targets that are empty, NaN, inf, "n/a", "none", "-", "?" or any non-number: NaN
  (masked; ``build_store`` counts them per target). Cells that are none of those but still
  not a number ("abc", "1,5") are also counted apart, with their first rows and values
  (``NotNumbers``, passed to ``Table.rows``), so that a typo is not silently a missing label.
- an SDF record that RDKit cannot read (or with more than ``MAX_ATOMS`` heavy atoms) is
  rejected; the records after it still load.
- fields up to ``FIELD_LIMIT`` characters (16 MiB) are read (an over-long SMILES is then
  rejected by the featurizer); a longer field is a rejected row.
- non-UTF-8 text, binary files: DataError with the first bad line and column.
- an empty file: DataError; a header-only file: no rows (``build_store`` raises DataError).
"""

from __future__ import annotations

import csv
import gzip
import io
import itertools
import zlib
import math
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem.featurize import MAX_ATOMS, FeaturizationError
from molpipe.data.errors import DataError

CSV_SUFFIXES = (".csv",)
SDF_SUFFIXES = (".sdf", ".sd")
_NA = {"na", "n/a", "nan", "none", "null", "-", "?"}
PEEK_ROWS = 200                         # rows looked at to guess numeric target columns
_PROP = re.compile(r"^>.*?<([^>]*)>")
_GZIP_MAGIC = b"\x1f\x8b"
_OTHER_DELIMITERS = (";", "\t", "|")
#: longest CSV field read (the csv module's default limit is 128 kB)
FIELD_LIMIT = 16 << 20

#: one input row: (1-based data row number, SMILES or Mol or the reason it is broken, targets
#: (n_targets,) float32 with NaN where missing or not a number). CSV rows count data rows
#: (not the header, not blank lines); SDF rows count records.
Row = tuple[int, "str | Chem.Mol | FeaturizationError", np.ndarray]


@dataclass(frozen=True)
class Table:
    """An opened (validated, not yet read) CSV or SDF file; iterate it for its rows.

    Fields
    ------
    path : the file.
    kind : "csv" or "sdf".
    smiles_column : the CSV column holding SMILES (None for SDF).
    target_names : target columns (CSV) or properties (SDF), in order.
    delimiter : the CSV delimiter (found from the header line).
    columns : the CSV header's column names (empty for SDF).
    """

    path: Path
    kind: str
    smiles_column: str | None
    target_names: tuple[str, ...]
    delimiter: str = ","
    columns: tuple[str, ...] = ()

    def __iter__(self) -> Iterator[Row]:
        return self.rows()

    def rows(self, not_numbers: NotNumbers | None = None) -> Iterator[Row]:
        """The rows, streamed; target cells that are not numbers are noted in ``not_numbers``.

        Parameters
        ----------
        not_numbers : a ``NotNumbers`` for ``target_names``, updated while the rows are read
            (complete once the iterator is exhausted), or None.
        """
        if self.kind == "csv":
            return _iter_csv(self, not_numbers)
        return _iter_sdf(self, not_numbers)

    def estimate_rows(self) -> int:
        """Cheap row count (newlines or ``$$$$`` markers) for progress bars."""
        marker = b"\n" if self.kind == "csv" else b"$$$$"
        count, last = 0, b""
        with _open_binary(self.path) as f:
            while block := f.read(1 << 20):
                count += (last + block).count(marker) - last.count(marker)
                last = block[-3:]
        return max(count - (self.kind == "csv"), 0)


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
        text = (text or "").strip()
        if not text or text.lower() in _NA or _is_number(text):
            return
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


def open_table(path: str | Path, *, smiles_column: str | None = None,
               targets: list[str] | tuple[str, ...] | None = None) -> Table:
    """Open and validate a CSV or SDF file (raises DataError with what to do).

    Parameters
    ----------
    path : a ``.csv`` (SMILES column + target columns) or ``.sdf`` file (targets from
        named properties), optionally gzip-compressed (``.csv.gz``, ``.sdf.gz``).
    smiles_column : CSV column with SMILES; default the column named ``smiles`` (any case).
    targets : target columns/properties; default the bundled set's targets if ``path`` is
        a bundled file, else every numeric column but the SMILES.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV or SDF file")
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    suffix = suffix.lower()
    if suffix not in CSV_SUFFIXES + SDF_SUFFIXES:
        raise DataError(f"{path}: not a CSV or SDF file (suffix {suffix or 'none'!r}); "
                        "use a .csv or .sdf file (or .csv.gz, .sdf.gz)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; it needs a header row and data rows")
    if targets is None:
        from molpipe.data.registry import find_by_path
        entry = find_by_path(path)
        if entry is not None:
            targets = entry.targets
            smiles_column = smiles_column or entry.smiles_column
    if suffix in CSV_SUFFIXES:
        return _open_csv(path, smiles_column, targets)
    return _open_sdf(path, targets)


def _is_gzip(path: Path) -> bool:
    with open(path, "rb") as f:
        return f.read(2) == _GZIP_MAGIC


def _open_binary(path: Path):
    """``path`` opened for binary reading, decompressed on the fly if it is gzip."""
    return gzip.open(path, "rb") if _is_gzip(path) else open(path, "rb")


def _open_text(path: Path, **kw) -> io.TextIOBase:
    """``path`` opened as UTF-8 text (BOM dropped), decompressed on the fly if it is gzip."""
    return io.TextIOWrapper(_open_binary(path), encoding="utf-8-sig", **kw)


def _gzip_error(path: Path, err: Exception) -> DataError:
    return DataError(f"{path}: corrupt or truncated gzip data ({err}); re-compress or "
                     "re-download the file")


_GZIP_ERRORS = (gzip.BadGzipFile, EOFError, zlib.error)


def _utf8_error(path: Path) -> DataError:
    """DataError naming the first line of ``path`` that is not valid UTF-8."""
    with _open_binary(path) as f:
        for n, line in enumerate(f, start=1):
            try:
                line.decode("utf-8")
            except UnicodeDecodeError as err:
                return DataError(f"{path}: not UTF-8 text (line {n}, column {err.start + 1}); "
                                 "re-save the file as UTF-8")
    return DataError(f"{path}: not UTF-8 text; re-save the file as UTF-8")


def _delimiter(header_line: str) -> str:
    """``,`` unless the header has no comma but another delimiter (the most frequent)."""
    if "," in header_line:
        return ","
    counts = {d: header_line.count(d) for d in _OTHER_DELIMITERS}
    best = max(counts, key=counts.get)
    return best if counts[best] else ","


def _csv_reader(f, delimiter: str):
    csv.field_size_limit(max(csv.field_size_limit(), FIELD_LIMIT))
    return csv.reader(f, delimiter=delimiter, strict=True)


def _match(name: str, available: list[str], path: Path, what: str) -> str:
    """The column called ``name`` (exact, else unique case-insensitive match)."""
    if name in available:
        return name
    folded = [c for c in available if c.lower() == name.lower()]
    if len(folded) == 1:
        return folded[0]
    shown = ", ".join(repr(c) for c in available) or "none"
    raise DataError(f"{path}: no {what} {name!r}; available: {shown}")


def _is_number(text: str) -> bool:
    try:
        float(text)
    except ValueError:
        return False
    return True


def _to_float(text: str | None) -> float:
    try:
        value = float(text)
    except (TypeError, ValueError):
        return math.nan
    return value if math.isfinite(value) else math.nan


def _numeric(columns: list[str], records: list[dict[str, str]]) -> list[str]:
    """Named columns whose values (in ``records``) are mostly numbers, ignoring NA markers."""
    found = []
    for c in columns:
        values = [(r.get(c) or "").strip() for r in records]
        values = [v for v in values if v and v.lower() not in _NA]
        n_num = sum(_is_number(v) for v in values)
        if c.strip() and n_num and n_num >= 0.8 * len(values):
            found.append(c)
    return found


def _open_csv(path: Path, smiles_column: str | None, targets) -> Table:
    header, peek = None, []
    try:
        with _open_text(path, newline="") as f:
            delimiter = _delimiter(f.readline())
            f.seek(0)
            reader = _csv_reader(f, delimiter)
            header = next(reader, None)
            for fields in itertools.islice(reader, PEEK_ROWS) if targets is None else ():
                peek.append(fields)
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from None
    except csv.Error as err:
        if header is None:
            raise DataError(f"{path}: not a readable CSV file ({err})") from None
    if not header or not any(h.strip() for h in header):
        raise DataError(f"{path}: empty file; it needs a header row and data rows")
    seen: dict[str, int] = {}
    for k, name in enumerate(header, start=1):
        if name.strip() and name in seen:
            raise DataError(f"{path}: duplicate column name {name!r} (columns {seen[name]} and "
                            f"{k}); rename one so the columns are not ambiguous")
        seen[name] = k
    if smiles_column is None:
        smiles = [c for c in header if c.strip().lower() == "smiles"]
        if not smiles:
            shown = ", ".join(repr(c) for c in header)
            found = (f" (the header line has no {delimiter!r}: is the delimiter another "
                     "character?)" if len(header) == 1 else "")
            raise DataError(f"{path}: no 'smiles' column; available: {shown}{found}; "
                            "name one with --smiles-column")
        if len(smiles) > 1:
            raise DataError(f"{path}: several SMILES columns ({', '.join(map(repr, smiles))}); "
                            "name one with --smiles-column")
        smiles_column = smiles[0]
    else:
        smiles_column = _match(smiles_column, header, path, "SMILES column")
    if targets is None:
        records = [dict(zip(header, row)) for row in peek if _fit(row, len(header))]
        targets = [c for c in _numeric(header, records) if c != smiles_column]
    else:
        targets = [_match(t, header, path, "target column") for t in targets]
    return Table(path, "csv", smiles_column, tuple(targets), delimiter, tuple(header))


def _fit(fields: list[str], width: int) -> list[str] | None:
    """``fields`` without trailing empty fields beyond ``width``; None if the count is wrong."""
    if len(fields) > width and not any(f.strip() for f in fields[width:]):
        fields = fields[:width]                          # "CCO,1," under "smiles,y"
    return fields if len(fields) == width else None


def csv_rows(table: Table) -> Iterator[tuple[int, list[str], FeaturizationError | None]]:
    """``(row number, fields, problem)`` per data row of a CSV ``table``, streamed.

    Rows are numbered from 1 after the header; blank lines are not rows. ``fields`` has one
    entry per header column (trailing empty fields dropped) unless ``problem`` says why it
    cannot: a malformed row or the wrong number of fields (then ``fields`` is as read).
    """
    row = 0
    try:
        with _open_text(table.path, newline="") as f:
            reader = _csv_reader(f, table.delimiter)
            width = len(next(reader))
            while True:
                try:
                    fields = next(reader)
                except StopIteration:
                    return
                except csv.Error as err:                 # the reader resumes on the next line
                    row += 1
                    yield row, [], FeaturizationError(f"bad CSV row ({err})")
                    continue
                if not fields:                           # blank line: not a data row
                    continue
                row += 1
                fitted = _fit(fields, width)
                if fitted is None:
                    yield row, fields, FeaturizationError(f"row has {len(fields)} fields, "
                                                          f"the header {width}")
                else:
                    yield row, fitted, None
    except UnicodeDecodeError:
        raise _utf8_error(table.path) from None
    except _GZIP_ERRORS as err:
        raise _gzip_error(table.path, err) from None


def _iter_csv(table: Table, not_numbers: NotNumbers | None = None) -> Iterator[Row]:
    s = table.columns.index(table.smiles_column)
    cols = [table.columns.index(t) for t in table.target_names]
    missing = np.full(len(table.target_names), np.nan, np.float32)
    for row, fields, problem in csv_rows(table):
        if problem is not None:
            yield row, problem, missing.copy()
            continue
        cells = [fields[c] for c in cols]
        y = np.array([_to_float(c) for c in cells], dtype=np.float32)
        if not_numbers is not None:
            not_numbers.note(row, y, cells)
        yield row, fields[s].strip(), y


def sdf_records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(mol block, properties) of every record, streamed."""
    lines: list[str] = []
    n_records = 0
    try:
        with _open_text(path) as f:
            for line in f:
                if line.startswith("$$$$"):
                    n_records += 1
                    yield _split_record(lines)
                    lines = []
                else:
                    lines.append(line)
    except UnicodeDecodeError:
        raise _utf8_error(path) from None
    except _GZIP_ERRORS as err:
        raise _gzip_error(path, err) from None
    if any(line.strip() for line in lines):
        yield _split_record(lines)


def _split_record(lines: list[str]) -> tuple[str, dict[str, str]]:
    """Split an SDF record into its mol block and its ``> <name>`` data items."""
    end = next((i for i, line in enumerate(lines) if line.startswith("M  END")), len(lines) - 1)
    props: dict[str, str] = {}
    name, value = None, []
    for line in lines[end + 1:]:
        m = _PROP.match(line)
        if m:
            name, value = m.group(1), []
        elif name is not None and line.strip():
            value.append(line.strip())
        elif name is not None:
            props[name] = "\n".join(value)
            name = None
    if name is not None:
        props[name] = "\n".join(value)
    return "".join(lines[:end + 1]), props


def _open_sdf(path: Path, targets) -> Table:
    peek = list(itertools.islice(sdf_records(path), PEEK_ROWS))
    if not peek:
        raise DataError(f"{path}: empty file; it holds no SDF records")
    names = list(dict.fromkeys(k for _, props in peek for k in props))
    if targets is None:
        targets = _numeric(names, [props for _, props in peek])
    else:
        targets = [_match(t, names, path, "SDF property") for t in targets]
    return Table(path, "sdf", None, tuple(targets))


def _iter_sdf(table: Table, not_numbers: NotNumbers | None = None) -> Iterator[Row]:
    for row, (block, props) in enumerate(sdf_records(table.path), start=1):
        cells = [props.get(t) for t in table.target_names]
        y = np.array([_to_float(c) for c in cells], dtype=np.float32)
        if not_numbers is not None:
            not_numbers.note(row, y, cells)
        yield row, mol_from_block(block), y


def mol_from_block(block: str) -> Chem.Mol | FeaturizationError:
    """Sanitized molecule of a mol block, or the reason it is broken."""
    with rdBase.BlockLogs():
        raw = Chem.MolFromMolBlock(block, sanitize=False)
        if raw is None:
            return FeaturizationError("unparsable SDF record")
        n = raw.GetNumHeavyAtoms()
        if n > MAX_ATOMS:                                # sanitizing huge records can hang
            return FeaturizationError(f"too many atoms ({n} > {MAX_ATOMS})")
        mol = Chem.MolFromMolBlock(block)
        if mol is not None:
            return mol
        failed = Chem.SanitizeMol(raw, catchErrors=True)
    if failed == Chem.SanitizeFlags.SANITIZE_PROPERTIES:
        return FeaturizationError("bad valence")
    return FeaturizationError(f"SDF record fails sanitization ({failed})")
