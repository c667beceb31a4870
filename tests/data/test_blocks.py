"""Reading in blocks (what build_store's workers get) gives the rows the readers give."""

import gzip
import zlib

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem

from molpipe.chem.featurize import FeaturizationError
from molpipe.data.blocks import ByteLines, _gunzip
from molpipe.data.build import rows_via_blocks
from molpipe.data.errors import DataError
from molpipe.data.readers import open_table
from molpipe.data.text import NotNumbers
from molpipe.inference.fpfiles import _smi_rows

SOME = settings(max_examples=60, deadline=None, derandomize=True,
                suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])


def same_rows(a, b):
    assert [r[0] for r in a] == [r[0] for r in b]
    for (_, x, y), (_, u, v) in zip(a, b):
        if isinstance(x, Exception):
            assert type(u) is type(x) and str(u) == str(x)
        elif isinstance(x, Chem.Mol):
            assert Chem.MolToSmiles(x) == Chem.MolToSmiles(u)
        else:
            assert x == u
        assert y.dtype == v.dtype and np.array_equal(y, v, equal_nan=True)


def both_ways(path, chunk, **kw):
    """(rows as Table.rows reads them, rows read in blocks of ``chunk``) and their NotNumbers."""
    table = open_table(path, **kw)
    seen_a, seen_b = NotNumbers(table.target_names), NotNumbers(table.target_names)
    a = list(table.rows(seen_a))
    b = list(rows_via_blocks(table, seen_b, chunk=chunk))
    same_rows(a, b)
    assert seen_a.as_dict() == seen_b.as_dict()
    return a


FIELD = st.text(alphabet='CNO1=()cn "\',;\t|xé\r\n', max_size=8)
LINE_END = st.sampled_from(["\n", "\r\n", "\r"])


@SOME
@given(rows=st.lists(st.lists(FIELD, min_size=0, max_size=4), max_size=12),
       quote=st.booleans(), ends=st.lists(LINE_END, min_size=1, max_size=3),
       bom=st.booleans(), delimiter=st.sampled_from([",", ";"]), chunk=st.integers(1, 4),
       last_newline=st.booleans())
def test_random_csv_reads_the_same_in_blocks(tmp_path_factory, rows, quote, ends, bom,
                                              delimiter, chunk, last_newline):
    """Quoted fields with newlines, CR line ends, blank lines, wrong field counts, stray
    quotes: the csv module's reading, split at any block boundary."""
    def cell(f):
        return '"' + f.replace('"', '""') + '"' if quote and f else f

    text = f"smiles{delimiter}y{delimiter}z\n"
    for k, r in enumerate(rows):
        text += delimiter.join(cell(f) for f in r) + ends[k % len(ends)]
    if not last_newline:
        text = text.rstrip("\r\n")
    path = tmp_path_factory.mktemp("csv") / "r.csv"
    path.write_bytes((b"\xef\xbb\xbf" if bom else b"") + text.encode("utf-8"))
    both_ways(path, chunk, targets=["y", "z"])


@pytest.mark.parametrize("chunk", [1, 2, 3, 1000])
def test_hostile_csv_in_blocks(tmp_path, chunk):
    text = ('name,smiles,y\n"a,\nb",CCO,1\n"c","C\nC",2\nd,CCN,"3"\n\n\r\nx,"CC"N,4\n'
            'e,CCC,abc\nf,CO,1,\ng,CN,1,2\nh,"C\r\nO",n/a\nlast,CCCC')
    path = tmp_path / "h.csv"
    path.write_text(text, encoding="utf-8", newline="")
    rows = both_ways(path, chunk, targets=["y"])
    assert [r[0] for r in rows] == list(range(1, 10))
    assert isinstance(rows[3][1], FeaturizationError) and "2 fields" in str(rows[8][1])


@pytest.mark.parametrize("chunk", [1, 3, 1000])
def test_smi_blocks(tmp_path, chunk):
    path = tmp_path / "m.smi"
    path.write_text("SMILES Name\nCCO ethanol\n\n# a comment\nc1ccccc1\tbenzene ring\r\n"
                    "  CCN  \nC1CC broken\nCO")
    table = open_table(path)
    rows = list(rows_via_blocks(table, chunk=chunk))
    assert [(r[0], r[1]) for r in rows] == [(1, "CCO"), (2, "c1ccccc1"), (3, "CCN"),
                                           (4, "C1CC"), (5, "CO")]
    assert all(r[2].shape == (0,) for r in rows) and table.target_names == ()
    # Table.rows is rows_via_blocks; molpipe fingerprint reads the file as text, by lines
    assert [r[1] for r in rows] == [smiles for _, smiles in _smi_rows(path)]


@pytest.mark.parametrize("chunk", [1, 2, 1000])
def test_sdf_in_blocks(tmp_path, chunk):
    from .conftest import BROKEN, _record

    text = (_record("CCO", {"y": "1.0"}) + BROKEN + _record("c1ccccc1O", {"y": "x"})
            + "\x01 not a record\n$$$$\n" + _record("CCN", {"y": "n/a"}))
    for name, data in (("a.sdf", text.replace("\n", "\r\n").encode()),
                       ("b.sdf.gz", gzip.compress(text.rstrip("$\n").encode()))):
        path = tmp_path / name
        path.write_bytes(data)
        rows = both_ways(path, chunk, targets=["y"])
        assert len(rows) == 5


def test_gunzip_members_padding_and_cuts(tmp_path):
    data = gzip.compress(b"smiles\nCCO\n") + gzip.compress(b"CCN\n") + b"\x00" * 10
    path = tmp_path / "m.gz"
    path.write_bytes(data)
    with open(path, "rb") as f:
        assert b"".join(_gunzip(f)) == b"smiles\nCCO\nCCN\n"
    big = gzip.compress(b"".join(b"C%d\n" % i for i in range(200_000)))
    path.write_bytes(big[: len(big) // 2])
    got = []
    with open(path, "rb") as f, pytest.raises(EOFError):
        for piece in _gunzip(f):
            got.append(piece)
    assert len(b"".join(got)) > 100_000                   # every byte before the cut
    bad = bytearray(big)
    bad[len(bad) // 2] ^= 0xFF
    path.write_bytes(bytes(bad))
    with open(path, "rb") as f, pytest.raises(zlib.error):
        for _ in _gunzip(f):
            pass


def test_cut_gzip_ends_after_the_last_whole_line(tmp_path):
    big = gzip.compress(b"smiles\n" + b"".join(b"C%d\n" % i for i in range(100_000)))
    path = tmp_path / "cut.csv.gz"
    path.write_bytes(big[: len(big) // 2])
    lines = ByteLines(path)
    while lines.fill():
        pass
    assert isinstance(lines.error, DataError) and "corrupt or truncated gzip" in str(lines.error)
    assert lines.buf.endswith(b"\n")
    table = open_table(path, targets=[])
    with pytest.raises(DataError, match="truncated gzip"):
        for _ in rows_via_blocks(table):
            pass


def test_non_utf8_line_in_blocks(tmp_path):
    path = tmp_path / "late.csv"
    path.write_bytes(("smiles,y\n" + "CCO,1\n" * 5000 + "CC\xe9,2\n").encode("latin-1"))
    got = []
    with pytest.raises(DataError, match=r"not UTF-8 text \(line 5002, column 3\)"):
        for r in rows_via_blocks(open_table(path, targets=["y"]), chunk=1000):
            got.append(r)
    assert len(got) == 5000                                # every row before it
