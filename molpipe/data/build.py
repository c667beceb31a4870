"""build_store: featurize a data file once into a graph store directory: streamed in blocks to
featurizing processes, written incrementally, resumable, installed atomically."""

from __future__ import annotations

import fcntl
import json
import os
import secrets
import shutil
import time
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path

import numpy as np

from molpipe.chem.featurize import FEATURIZER_VERSION
from molpipe.chem.featurize import ATOM_DIM, BOND_DIM
from molpipe.data.blocks import Block, ByteLines, csv_blocks, csv_header_end, sdf_blocks, smi_blocks
from molpipe.data.errors import DataError
from molpipe.data.pool import featurize_blocks
from molpipe.data.readers import Table, open_table
from molpipe.data.records import Spec
from molpipe.data.writer import (JOURNAL, REJECTED_CELLS, REJECTS, STORE_FORMAT, StoreWriter,
                                 read_journal)
from molpipe.io.safenpz import sha256_file

__all__ = ["build_store", "META", "REJECTS", "REJECTED_CELLS", "CHUNK", "Progress",
           "sha256_file"]

CHUNK = 1024                    # rows per featurizing task
META = "meta.json"
LOCK = "lock"
#: progress callback: (rows done, estimated total rows)
Progress = Callable[[int, int], None]


def spec_of(table: Table, rounds: tuple[int, int]) -> Spec:
    """How the workers read ``table``'s rows."""
    if table.kind == "csv":
        return Spec("csv", table.delimiter, len(table.columns),
                    table.columns.index(table.smiles_column),
                    tuple(table.columns.index(t) for t in table.target_names), rounds)
    if table.kind == "parquet":
        return Spec("parquet", targets=tuple(range(len(table.target_names))), rounds=rounds)
    return Spec(table.kind, targets=tuple(table.target_names), rounds=rounds)


def open_blocks(table: Table, chunk: int, state: dict | None) -> tuple[Iterator[Block], bool]:
    """The table's blocks from the start, or after the journal ``state``'s position if the
    input up to it is unchanged; (blocks, whether resumed)."""
    if table.kind == "parquet":
        from molpipe.data.parquet import parquet_blocks

        return parquet_blocks(table, chunk, state)
    lines = ByteLines(table.path)
    resumed = state is not None and lines.skip(state["position"], state["digest"])
    if state is not None and not resumed:
        lines.close()
        lines = ByteLines(table.path)
    if not resumed and table.kind == "csv":
        csv_header_end(lines, table.delimiter)

    def blocks():
        try:
            if table.kind == "csv":
                yield from csv_blocks(lines, chunk, table.delimiter)
            elif table.kind == "smi":
                yield from smi_blocks(lines, chunk)
            else:
                yield from sdf_blocks(lines, chunk)
        finally:
            lines.close()

    return blocks(), resumed


def rows_via_blocks(table: Table, not_numbers=None, chunk: int = CHUNK) -> Iterator:
    """``Table.rows`` read the way ``build_store`` reads them (in this process, in blocks of
    ``chunk`` lines or records)."""
    from molpipe.data.records import read_row, records

    spec = spec_of(table, (2, 6))
    blocks, _ = open_blocks(table, chunk, None)
    base = 0
    for b in blocks:
        recs = records(spec, b.kind, b.payload)
        for k, rec in enumerate(recs, start=1):
            if b.kind == "records":
                k, rec = rec
            item, y, bad = read_row(spec, rec)
            if not_numbers is not None:
                for j, cell in bad:
                    not_numbers.check(j, base + k, cell)
            yield base + k, item, np.array(y, np.float32)
        base += len(recs)


def _key(table: Table, rounds: tuple[int, int]) -> dict:
    """What a journal must match to be resumed."""
    return {"store_format": STORE_FORMAT, "featurizer": FEATURIZER_VERSION,
            "source": str(table.path.resolve()), "kind": table.kind,
            "smiles_column": table.smiles_column, "targets": list(table.target_names),
            "delimiter": table.delimiter, "rounds": list(rounds)}


def _prepare_out_dir(out_dir: Path) -> None:
    if out_dir.exists() and not (out_dir / META).exists() and any(out_dir.iterdir()):
        raise DataError(f"{out_dir}: exists and is not a graph store; choose another -o")
    out_dir.parent.mkdir(parents=True, exist_ok=True)


def _install(tmp: Path, out_dir: Path) -> None:
    """Atomically move the finished store ``tmp`` to ``out_dir`` (replacing an old store)."""
    old = None
    if out_dir.exists():
        old = out_dir.with_name(f".{out_dir.name}.old-{secrets.token_hex(4)}")
        os.rename(out_dir, old)
    os.rename(tmp, out_dir)
    if old is not None:
        shutil.rmtree(old, ignore_errors=True)


def partial_dir(out_dir: str | Path) -> Path:
    """Where the store ``out_dir`` is written (and an interrupted build is kept)."""
    out_dir = Path(out_dir)
    return out_dir.with_name(f".{out_dir.name}.partial")


def _lock(tmp: Path):
    """An exclusive lock on the partial store, or DataError if another build holds it."""
    f = open(tmp / LOCK, "w")
    try:
        fcntl.flock(f, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except OSError:
        f.close()
        raise DataError(f"{tmp}: another molpipe preprocess is writing this store; wait for "
                        "it or stop it") from None
    return f


def build_store(source: str | Path, out_dir: str | Path, *, smiles_column: str | None = None,
                targets: Sequence[str] | None = None, min_rounds: int = 2, max_rounds: int = 6,
                n_jobs: int = 2, progress: Progress | None = None, chunk_size: int = CHUNK,
                notice: Callable[[str], None] | None = None) -> dict:
    """Featurize a CSV, SMILES, SDF or Parquet file once into the graph store ``out_dir``.

    Every row read is either kept or written to ``rejects.csv`` (row, smiles, reason). The
    store is written into ``partial_dir(out_dir)`` and renamed into place when complete. An
    interrupted build (a cut gzip file, a kill, Ctrl-C) keeps what it wrote there with a
    journal; the same call again resumes after the last committed block if the input up to
    it is unchanged (else starts over, saying so through ``notice``).

    Returns
    -------
    dict : rows_read, rows_kept, rows_rejected, targets_missing (kept rows with a NaN
        target, per target), targets_not_numbers ({target: {count, rows, values}} of the cells
        read as NaN that were neither empty, an NA marker nor a number, among all rows read,
        with the first 5 rows and values; only targets that have any, else {}), rejects
        (path), store (path), seconds, mols_per_s (rows read this run / s), targets,
        resumed_from_row (0 unless resumed). ``meta.json`` holds the counts too.
    """
    if not 1 <= min_rounds <= max_rounds:
        raise ValueError(f"need 1 <= min_rounds <= max_rounds, got {min_rounds} and {max_rounds}")
    t0 = time.perf_counter()
    say = notice or (lambda text: None)
    table = open_table(source, smiles_column=smiles_column, targets=targets)
    out_dir = Path(out_dir)
    _prepare_out_dir(out_dir)
    rounds = (min_rounds, max_rounds)
    key = _key(table, rounds)
    tmp = partial_dir(out_dir)
    state = read_journal(tmp) if tmp.is_dir() else None
    if state is not None and state.get("key") != key:
        say(f"{tmp}: an interrupted build with other settings; starting over")
        state = None
    if state is None and tmp.exists():
        lock = _lock(tmp)                  # not while another build writes it
        lock.close()
        shutil.rmtree(tmp)
    tmp.mkdir(exist_ok=True)
    lock = _lock(tmp)
    try:
        blocks, resumed = open_blocks(table, chunk_size, state)
        if state is not None and not resumed:
            say(f"{table.path}: changed since the interrupted build of {out_dir} (its first "
                f"{state['position']} bytes differ); starting over")
            for p in tmp.iterdir():
                if p.name != LOCK:
                    p.unlink()
            state = None
        start_row = state["rows_read"] if state else 0
        if resumed:
            say(f"resuming {out_dir} after row {start_row} (the input up to it is unchanged)")
        counts = _write(table, tmp, spec_of(table, rounds), blocks, n_jobs, state, key,
                        progress, start_row)
        if counts["rows_read"] == 0:
            raise DataError(f"{table.path}: no data rows; the file has only a header" if
                            table.kind == "csv" else f"{table.path}: no molecules in the file")
        seconds = time.perf_counter() - t0
        meta = {
            "featurizer_version": FEATURIZER_VERSION, "store_format": STORE_FORMAT,
            "source": {"path": str(table.path.resolve()), "sha256": sha256_file(table.path),
                       "kind": table.kind},
            "smiles_column": table.smiles_column, "targets": list(table.target_names),
            **counts, "min_rounds": min_rounds, "max_rounds": max_rounds,
            "atom_dim": ATOM_DIM, "bond_dim": BOND_DIM, "seconds": round(seconds, 3),
            "resumed_from_row": start_row,
        }
        (tmp / META).write_text(json.dumps(meta, indent=2) + "\n", encoding="utf-8")
        for name in (JOURNAL, LOCK):
            (tmp / name).unlink(missing_ok=True)
        _install(tmp, out_dir)
    except BaseException:
        kept = read_journal(tmp)
        if kept is None or not kept.get("rows_read"):
            shutil.rmtree(tmp, ignore_errors=True)
        raise
    finally:
        lock.close()
    return {"store": str(out_dir), "rejects": str(out_dir / REJECTS), **counts,
            "targets": list(table.target_names), "seconds": seconds,
            "mols_per_s": (counts["rows_read"] - start_row) / max(seconds, 1e-9),
            "resumed_from_row": start_row}


def _write(table: Table, tmp: Path, spec: Spec, blocks: Iterator[Block], n_jobs: int,
           state: dict | None, key: dict, progress: Progress | None, start_row: int) -> dict:
    """Featurize the blocks into ``tmp``; return the row and target cell counts."""
    total = table.estimate_rows() if progress else 0
    writer = StoreWriter(tmp, table.target_names, state, key)
    try:
        for block, result, final in featurize_blocks(spec, blocks, n_jobs):
            writer.add(result, final, block.end, block.digest)
            if progress and final:
                progress(writer.rows_read, max(total, writer.rows_read))
    except DataError as err:
        writer.commit()
        writer.abandon()
        if writer.rows_read:
            raise DataError(f"{err}; rows 1-{writer.rows_read} are kept in {tmp}: rerun the "
                            "same command to resume after them") from None
        raise
    except BaseException:
        writer.commit()
        writer.abandon()
        raise
    writer.close()
    return {"rows_read": writer.rows_read, "rows_kept": writer.rows_kept,
            "rows_rejected": writer.rows_read - writer.rows_kept,
            "targets_missing": dict(zip(table.target_names, writer.missing.tolist())),
            "targets_not_numbers": writer.not_numbers.as_dict()}
