"""The main process's side of ``build_store``: an input file read as a stream of blocks for the
featurizing workers, with the position and a rolling sha256 of the input consumed (so that an
interrupted build can resume after the last block it wrote, once the prefix is verified).

CSV blocks are raw lines (the workers split them) unless they hold a quote or a bare carriage
return: those are read here with the csv module (quoted newlines, broken quoting), and their
records are sent. SMILES files are always raw lines; SDF blocks are whole records; Parquet
blocks are record batches. A gzip stream is decompressed here (every byte before a cut or a
corruption is used); its failure, or text that is not UTF-8, ends the stream with a DataError
after the blocks before it.
"""

from __future__ import annotations

import csv
import hashlib
import zlib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

from molpipe.chem.featurize import FeaturizationError
from molpipe.data.errors import DataError
from molpipe.data.text import GZIP_ERRORS, GZIP_MAGIC, gzip_error

READ = 1 << 18                           # compressed or plain bytes read at a time
BOM = b"\xef\xbb\xbf"


@dataclass
class Block:
    """One featurizing task's input.

    Fields
    ------
    kind : "lines" (payload: (text, starts the file)), "records" (CSV: fields or the reason
        a row is broken), "sdf" (text of whole records) or "columns" (smiles, target columns).
    payload : what ``records.featurize_block`` reads.
    end : the input position after this block (bytes of the decompressed file; Parquet: rows).
    digest : sha256 hex of the input up to ``end``.
    source : the input file (named by the errors of the blocks' featurizing).
    """

    kind: str
    payload: object
    end: int
    digest: str
    source: Path


def _gunzip(f) -> Iterator[bytes]:
    """The decompressed bytes of the gzip file ``f`` (members one after another, zero padding
    skipped); EOFError or zlib.error after the last good bytes if it is cut or corrupt."""
    pending, d = b"", None
    while True:
        if d is None:
            pending = pending.lstrip(b"\x00")
            while not pending:
                pending = f.read(READ)
                if not pending:
                    return
                pending = pending.lstrip(b"\x00")
            d = zlib.decompressobj(16 + zlib.MAX_WBITS)
        if not pending:
            pending = f.read(READ)
            if not pending:
                tail = d.flush()
                if tail:
                    yield tail
                if not d.eof:
                    raise EOFError("Compressed file ended before the end-of-stream marker "
                                   "was reached")
                d = None
                continue
        out = d.decompress(pending, 4 * READ)
        pending = d.unconsumed_tail
        if out:
            yield out
        if d.eof:
            pending, d = d.unused_data + pending, None


class ByteLines:
    """The decompressed input, cut at line ends; what is taken is hashed and counted.

    ``buf`` holds what has been read and not yet taken; ``position`` counts the bytes taken
    and ``lines`` their newlines; ``error`` is the read failure met (the stream then ends at
    the last complete line before it).
    """

    def __init__(self, path: Path):
        self.path = path
        self._file = open(path, "rb")
        gz = self._file.read(2) == GZIP_MAGIC
        self._file.seek(0)
        self._pieces = _gunzip(self._file) if gz else iter(lambda: self._file.read(READ), b"")
        self.buf = b""
        self.eof = False
        self.error: DataError | None = None
        self.position = self.lines = 0
        self.hash = hashlib.sha256()

    def close(self) -> None:
        self._file.close()

    def fill(self) -> bool:
        """Read more into ``buf``; False at the end (or at a read failure)."""
        if self.eof:
            return False
        try:
            piece = next(self._pieces, b"")
        except GZIP_ERRORS as err:
            self.error = gzip_error(self.path, err)
            piece = b""
        if not piece:
            self.eof = True
            if self.error is not None:                   # a cut line is not a row
                end = max(self.buf.rfind(b"\n"), self.buf.rfind(b"\r")) + 1
                self.buf = self.buf[:end]
            return False
        self.buf += piece
        return True

    def end_of_lines(self, n: int, start: int = 0) -> int:
        """The offset in ``buf`` after the next ``n`` lines (``\\n``-terminated) from ``start``,
        or the end of the input."""
        pos, found = start, 0
        while found < n:
            i = self.buf.find(b"\n", pos)
            if i < 0:
                if self.fill():
                    continue
                return len(self.buf)
            pos, found = i + 1, found + 1
        return pos

    def end_of_line(self, start: int) -> int | None:
        """The offset after the line starting at ``start`` (universal newlines: ``\\n``,
        ``\\r\\n``, ``\\r``), or None at the end of the input."""
        while True:
            i, j = self.buf.find(b"\n", start), self.buf.find(b"\r", start)
            if j >= 0 and (i < 0 or j < i):
                if j + 1 < len(self.buf) or not self.fill():
                    return j + 2 if self.buf[j + 1:j + 2] == b"\n" else j + 1
                continue
            if i >= 0:
                return i + 1
            if not self.fill():
                return len(self.buf) if start < len(self.buf) else None

    def take(self, k: int) -> bytes:
        """Hand out the first ``k`` bytes of ``buf``."""
        data, self.buf = self.buf[:k], self.buf[k:]
        self.hash.update(data)
        self.position += k
        self.lines += data.count(b"\n")
        return data

    def skip(self, position: int, digest: str) -> bool:
        """Take the first ``position`` bytes (a resumed build); whether their sha256 is
        ``digest``."""
        while self.position + len(self.buf) < position and self.fill():
            pass
        if self.position + len(self.buf) < position:
            return False
        self.take(position - self.position)
        return self.hash.hexdigest() == digest

    def decode(self, data: bytes) -> str:
        """``data`` (the start of ``buf``) as text; DataError naming its first bad line."""
        try:
            return data.decode("utf-8")
        except UnicodeDecodeError as err:
            line = self.lines + data.count(b"\n", 0, err.start) + 1
            column = err.start - data.rfind(b"\n", 0, err.start)
            raise DataError(f"{self.path}: not UTF-8 text (line {line}, column {column}); "
                            "re-save the file as UTF-8") from None

    def valid_prefix(self, k: int) -> int:
        """The offset of the first line of ``buf[:k]`` that is not UTF-8 (``k`` if none)."""
        try:
            self.buf[:k].decode("utf-8")
        except UnicodeDecodeError as err:
            return self.buf.rfind(b"\n", 0, err.start) + 1
        return k


def _block(lines: ByteLines, kind: str, payload) -> Block:
    return Block(kind, payload, lines.position, lines.hash.hexdigest(), lines.path)


def _take_valid(lines: ByteLines, k: int) -> str:
    """Take and decode the first ``k`` bytes, or only its lines before the first that is not
    UTF-8 (the file's BOM dropped); that line's DataError is raised now if it is the first,
    else at the next call (so that the rows before it are featurized first)."""
    good = lines.valid_prefix(k)
    if k and not good:
        lines.decode(lines.buf[:k])                      # raises the DataError
    first = lines.position == 0
    text = lines.take(good).decode("utf-8")
    return text[1:] if first and text.startswith("\ufeff") else text


def csv_header_end(lines: ByteLines, delimiter: str) -> None:
    """Take the header record (it may span lines if quoted)."""
    cursor = [0]

    def feed():
        while (end := lines.end_of_line(cursor[0])) is not None:
            text = lines.decode(lines.buf[:end])[len(lines.buf[:cursor[0]].decode()):]
            cursor[0] = end
            yield text

    try:
        next(csv.reader(feed(), delimiter=delimiter, strict=True), None)
    except csv.Error:
        pass
    lines.take(cursor[0])


def csv_blocks(lines: ByteLines, n: int, delimiter: str) -> Iterator[Block]:
    """Blocks of about ``n`` CSV rows after the header; DataError after the last good block."""
    from molpipe.data.readers import FIELD_LIMIT, _csv_reader

    while True:
        if lines.error is not None and not lines.buf:
            raise lines.error
        k = lines.end_of_lines(n)
        if k == 0:
            if lines.error is not None:
                raise lines.error
            return
        raw = lines.buf[:k]
        if b'"' not in raw and raw.count(b"\r") == raw.count(b"\r\n") and k < FIELD_LIMIT:
            text = _take_valid(lines, k)
            yield _block(lines, "lines", (text, False))
            continue
        # quotes or bare carriage returns: the csv module reads this block's records here
        cursor, record_end, rows = [0], 0, []
        bad: list[DataError] = []

        def feed():
            while (end := lines.end_of_line(cursor[0])) is not None:
                chunk = lines.buf[cursor[0]:end]
                try:
                    text = chunk.decode("utf-8")
                except UnicodeDecodeError:
                    try:
                        lines.decode(lines.buf[:end])
                    except DataError as err:
                        bad.append(err)
                    return
                cursor[0] = end
                yield text

        reader = _csv_reader(feed(), delimiter)
        while cursor[0] < k:
            try:
                fields = next(reader)
            except StopIteration:
                break
            except csv.Error as err:
                if bad:
                    break
                rows.append(FeaturizationError(f"bad CSV row ({err})"))
                record_end = cursor[0]
                continue
            record_end = cursor[0]
            if fields:
                rows.append(fields)
        if record_end == 0 and bad:
            raise bad[0]
        lines.take(record_end)
        yield _block(lines, "records", list(enumerate(rows, start=1)))
        if bad:
            raise bad[0]


def smi_blocks(lines: ByteLines, n: int) -> Iterator[Block]:
    """Blocks of ``n`` lines of a SMILES file."""
    while True:
        k = lines.end_of_lines(n)
        if k == 0:
            if lines.error is not None:
                raise lines.error
            return
        first = lines.position == 0
        text = _take_valid(lines, k)
        yield _block(lines, "lines", (text, first))


def sdf_blocks(lines: ByteLines, n: int) -> Iterator[Block]:
    """Blocks of ``n`` whole SDF records (newlines made ``\\n``).

    A record without its ``$$$$`` line is whole only at a clean end of the file: after a
    read failure (a cut gzip file) the stream ends at the last ``$$$$``, so that a cut record
    is neither kept half nor, once the file is whole again, resumed from its middle."""
    while True:
        pos, found, whole = 0, 0, 0
        while found < n:
            end = lines.end_of_line(pos)
            if end is None:
                break
            if lines.buf.startswith(b"$$$$", pos):
                found, whole = found + 1, end
            pos = end
        if lines.error is not None:
            pos = whole
        if pos == 0:
            if lines.error is not None:
                raise lines.error
            return
        text = _take_valid(lines, pos)
        text = text.replace("\r\n", "\n").replace("\r", "\n")
        yield _block(lines, "sdf", text)
