"""Parquet files (through pyarrow, the optional extra ``parquet``): opened like a CSV (a SMILES
column, target columns), streamed by record batches."""

from __future__ import annotations

import hashlib
import itertools
from collections.abc import Iterator
from pathlib import Path

from molpipe.data.errors import DataError
from molpipe.data.text import match_name, smiles_column_of


def _pyarrow(path: Path):
    """(pyarrow, pyarrow.parquet), or DataError saying how to install them."""
    try:
        import pyarrow as pa
        import pyarrow.parquet as pq
    except ImportError:
        raise DataError(f"{path}: reading Parquet needs pyarrow; install it with "
                        "pip install 'molpipe[parquet]'") from None
    return pa, pq


def _file(path: Path):
    _, pq = _pyarrow(path)
    try:
        return pq.ParquetFile(path)
    except Exception as err:                       # pyarrow's ArrowInvalid, OSError, ...
        raise DataError(f"{path}: not a readable Parquet file ({_one_line(err)})") from None


def _one_line(err: Exception) -> str:
    """pyarrow's message (which may run over several lines) on one line."""
    return " ".join(str(err).split())


def _batches(path: Path, f, n: int, columns: list[str]) -> Iterator:
    """The record batches of ``n`` rows of ``f``'s ``columns``: pages are read only here, so
    a page that cannot be read is a DataError naming the rows before it."""
    batches, position = f.iter_batches(batch_size=n, columns=columns), 0
    while True:
        try:
            batch = next(batches, None)
        except Exception as err:                   # pyarrow's ArrowInvalid, OSError, ...
            raise DataError(f"{path}: not a readable Parquet file after row {position} "
                            f"({_one_line(err)})") from None
        if batch is None:
            return
        position += batch.num_rows
        yield batch


def parquet_rows(path: Path) -> int:
    return _file(path).metadata.num_rows


def open_parquet(path: Path, smiles_column: str | None, targets):
    """The Table of a Parquet file: its SMILES column (default the one named ``smiles``, any
    case) and targets (default every numeric column but the SMILES)."""
    from molpipe.data.readers import Table

    pa, _ = _pyarrow(path)
    schema = _file(path).schema_arrow
    names = list(schema.names)
    smiles_column = smiles_column_of(names, smiles_column, path)
    if targets is None:
        targets = [f.name for f in schema if f.name != smiles_column and (
            pa.types.is_integer(f.type) or pa.types.is_floating(f.type)
            or pa.types.is_decimal(f.type))]
    else:
        targets = [match_name(t, names, path, "target column") for t in targets]
    return Table(Path(path), "parquet", smiles_column, tuple(targets), ",", tuple(names))


def parquet_blocks(table, n: int, state: dict | None) -> tuple[Iterator, bool]:
    """Blocks of ``n`` rows: (smiles, target columns) as Python lists; the position counts
    rows and the digest hashes their values. Resumes after ``state``'s rows if their digest
    is unchanged; (blocks, whether resumed)."""
    from molpipe.data.blocks import Block

    f = _file(table.path)
    columns = [table.smiles_column, *table.target_names]
    h = hashlib.sha256()
    position = 0
    batches = _batches(table.path, f, n, columns)
    pending = []
    resumed = False
    if state is not None:
        for batch in batches:
            take = min(batch.num_rows, state["position"] - position)
            part = batch.slice(0, take)
            values = [part.column(c).to_pylist() for c in range(len(columns))]
            h.update(repr(values).encode())
            position += take
            if take < batch.num_rows:
                pending.append(batch.slice(take))
            if position >= state["position"]:
                break
        resumed = position == state["position"] and h.hexdigest() == state["digest"]
        if not resumed:
            f = _file(table.path)
            h, position, pending = hashlib.sha256(), 0, []
            batches = _batches(table.path, f, n, columns)

    def blocks():
        nonlocal position
        for batch in itertools.chain(pending, batches):    # streamed, not listed first
            values = [batch.column(c).to_pylist() for c in range(len(columns))]
            h.update(repr(values).encode())
            position += batch.num_rows
            yield Block("columns", (values[0], values[1:]), position, h.hexdigest(), table.path)

    return blocks(), resumed
