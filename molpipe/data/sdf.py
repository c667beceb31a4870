"""SDF files: records streamed (mol block, properties), molecules read from their blocks,
targets from named properties."""

from __future__ import annotations

import itertools
import re
from collections.abc import Iterator
from pathlib import Path

import numpy as np
from rdkit import Chem, rdBase

from molpipe.chem.featurize import MAX_ATOMS, FeaturizationError
from molpipe.data.errors import DataError
from molpipe.data.text import (GZIP_ERRORS, PEEK_ROWS, NotNumbers, Row, gzip_error, match_name,
                               numeric_columns, open_text, to_float, utf8_error)

_PROP = re.compile(r"^>.*?<([^>]*)>")


def sdf_records(path: Path) -> Iterator[tuple[str, dict[str, str]]]:
    """(mol block, properties) of every record, streamed."""
    lines: list[str] = []
    n_records = 0
    try:
        with open_text(path) as f:
            for line in f:
                if line.startswith("$$$$"):
                    n_records += 1
                    yield _split_record(lines)
                    lines = []
                else:
                    lines.append(line)
    except UnicodeDecodeError:
        raise utf8_error(path) from None
    except GZIP_ERRORS as err:
        raise gzip_error(path, err) from None
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


def sdf_targets(path: Path, targets) -> tuple[str, ...]:
    """The target properties of an SDF file: ``targets`` matched to its property names, or
    by default every numeric property of its first ``PEEK_ROWS`` records."""
    peek = list(itertools.islice(sdf_records(path), PEEK_ROWS))
    if not peek:
        raise DataError(f"{path}: empty file; it holds no SDF records")
    names = list(dict.fromkeys(k for _, props in peek for k in props))
    if targets is None:
        targets = numeric_columns(names, [props for _, props in peek])
    else:
        targets = [match_name(t, names, path, "SDF property") for t in targets]
    return tuple(targets)


def iter_sdf(path: Path, target_names, not_numbers: NotNumbers | None = None) -> Iterator[Row]:
    """The rows of an SDF file: (record number, Mol or why not, targets)."""
    for row, (block, props) in enumerate(sdf_records(path), start=1):
        cells = [props.get(t) for t in target_names]
        y = np.array([to_float(c) for c in cells], dtype=np.float32)
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
