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
import itertools
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from molpipe.chem.featurize import FeaturizationError
from molpipe.data.errors import DataError
from molpipe.data.sdf import iter_sdf, sdf_targets
from molpipe.data.text import (GZIP_ERRORS, PEEK_ROWS, NotNumbers, Row, gzip_error, is_gzip,
                               match_name, numeric_columns, open_text, smiles_column_of,
                               to_float, utf8_error)

CSV_SUFFIXES = (".csv",)
SDF_SUFFIXES = (".sdf", ".sd")
#: SMILES files: one molecule a line, ``SMILES [name ...]`` separated by white space, no
#: header (a first line whose first word is ``smiles`` is skipped; ``#`` starts a comment)
SMI_SUFFIXES = (".smi", ".smiles")
PARQUET_SUFFIXES = (".parquet", ".pq")
_OTHER_DELIMITERS = (";", "\t", "|")
#: longest CSV field read (the csv module's default limit is 128 kB)
FIELD_LIMIT = 16 << 20


def smi_words(line: str, first: bool) -> list[str] | None:
    """A SMILES file's ``line`` split in [SMILES, rest] (rest if any), or None if it is not a
    row: blank, a ``#`` comment, or (the ``first`` line of the file) a ``smiles`` header.
    The one rule for ``build_store`` and ``molpipe fingerprint``."""
    words = line.split(None, 1)
    if not words or words[0].startswith("#") or (first and words[0].lower() == "smiles"):
        return None
    return words


@dataclass(frozen=True)
class Table:
    """An opened (validated, not yet read) CSV, SMILES, SDF or Parquet file; iterate it for
    its rows.

    Fields
    ------
    path : the file.
    kind : "csv", "smi", "sdf" or "parquet".
    smiles_column : the CSV or Parquet column holding SMILES (None for SMILES and SDF files).
    target_names : target columns (CSV, Parquet) or properties (SDF), in order.
    delimiter : the CSV delimiter (found from the header line).
    columns : the CSV header's (Parquet schema's) column names (empty for SMILES and SDF).
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
        if self.kind == "sdf":
            return iter_sdf(self.path, self.target_names, not_numbers)
        from molpipe.data.build import rows_via_blocks

        return rows_via_blocks(self, not_numbers)

    def estimate_rows(self, sample: int = 8 << 20) -> int:
        """Cheap row count for progress bars: newlines or ``$$$$`` markers, counted in the
        first ``sample`` bytes and extrapolated by the share of the file they came from."""
        if self.kind == "parquet":
            from molpipe.data.parquet import parquet_rows

            return parquet_rows(self.path)
        marker = b"$$$$" if self.kind == "sdf" else b"\n"
        count, last, seen = 0, b"", 0
        size = self.path.stat().st_size
        with open(self.path, "rb") as raw, (gzip.open(raw) if is_gzip(self.path) else raw) as f:
            try:
                while block := f.read(1 << 20):
                    count += (last + block).count(marker) - last.count(marker)
                    last = block[-3:]
                    seen += len(block)
                    if seen >= sample and raw.tell() < size:
                        count = int(count * size / max(raw.tell(), 1))
                        break
            except GZIP_ERRORS:                    # a cut file: the rows before the cut
                pass
        return max(count - (self.kind == "csv"), 0)


def open_table(path: str | Path, *, smiles_column: str | None = None,
               targets: list[str] | tuple[str, ...] | None = None) -> Table:
    """Open and validate a CSV, SMILES, SDF or Parquet file (raises DataError with what to do).

    Parameters
    ----------
    path : a ``.csv`` (SMILES column + target columns), ``.smi`` (SMILES, then an optional
        name; no targets), ``.sdf`` (targets from named properties), optionally
        gzip-compressed (``.csv.gz``, ``.smi.gz``, ``.sdf.gz``), or ``.parquet`` file (read
        with pyarrow: ``pip install 'molpipe[parquet]'``).
    smiles_column : CSV or Parquet column with SMILES; default the column named ``smiles``
        (any case).
    targets : target columns/properties; default the bundled set's targets if ``path`` is
        a bundled file, else every numeric column but the SMILES.
    """
    path = Path(path)
    if not path.exists():
        raise DataError(f"{path}: no such file; check the path")
    if path.is_dir():
        raise DataError(f"{path}: is a directory, not a CSV, SMILES, SDF or Parquet file")
    suffix = Path(path.stem).suffix if path.suffix.lower() == ".gz" else path.suffix
    suffix = suffix.lower()
    if suffix not in CSV_SUFFIXES + SDF_SUFFIXES + SMI_SUFFIXES + PARQUET_SUFFIXES:
        raise DataError(f"{path}: not a CSV, SMILES, SDF or Parquet file (suffix "
                        f"{suffix or 'none'!r}); use a .csv, .smi, .sdf or .parquet file (or "
                        ".csv.gz, .smi.gz, .sdf.gz)")
    if path.stat().st_size == 0:
        raise DataError(f"{path}: empty file; it needs a header row and data rows")
    if suffix in PARQUET_SUFFIXES:
        from molpipe.data.parquet import open_parquet

        return open_parquet(path, smiles_column, targets)
    if suffix in SMI_SUFFIXES:
        if smiles_column is not None:
            raise DataError(f"{path}: a SMILES file has no columns; leave out --smiles-column")
        if targets:
            raise DataError(f"{path}: a SMILES file has no target columns; use a CSV, SDF or "
                            "Parquet file to train on")
        return Table(path, "smi", None, ())
    if targets is None:
        from molpipe.data.registry import find_by_path
        entry = find_by_path(path)
        if entry is not None:
            targets = entry.targets
            smiles_column = smiles_column or entry.smiles_column
    if suffix in CSV_SUFFIXES:
        return _open_csv(path, smiles_column, targets)
    return Table(path, "sdf", None, sdf_targets(path, targets))


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


def _open_csv(path: Path, smiles_column: str | None, targets) -> Table:
    header, peek = None, []
    try:
        with open_text(path, newline="") as f:
            delimiter = _delimiter(f.readline())
            f.seek(0)
            reader = _csv_reader(f, delimiter)
            header = next(reader, None)
            for fields in itertools.islice(reader, PEEK_ROWS) if targets is None else ():
                peek.append(fields)
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from None
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
    hint = (f" (the header line has no {delimiter!r}: is the delimiter another character?)"
            if len(header) == 1 else "")
    smiles_column = smiles_column_of(header, smiles_column, path, hint)
    if targets is None:
        records = [dict(zip(header, row)) for row in peek if _fit(row, len(header))]
        targets = [c for c in numeric_columns(header, records) if c != smiles_column]
    else:
        targets = [match_name(t, header, path, "target column") for t in targets]
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
        with open_text(table.path, newline="") as f:
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
        raise utf8_error(table.path) from None
    except GZIP_ERRORS as err:
        raise gzip_error(table.path, err) from None


def _iter_csv(table: Table, not_numbers: NotNumbers | None = None) -> Iterator[Row]:
    s = table.columns.index(table.smiles_column)
    cols = [table.columns.index(t) for t in table.target_names]
    missing = np.full(len(table.target_names), np.nan, np.float32)
    for row, fields, problem in csv_rows(table):
        if problem is not None:
            yield row, problem, missing.copy()
            continue
        cells = [fields[c] for c in cols]
        y = np.array([to_float(c) for c in cells], dtype=np.float32)
        if not_numbers is not None:
            not_numbers.note(row, y, cells)
        yield row, fields[s].strip(), y


