"""Bundled data sets: the manifest in ``datasets/``, looked up by name or by file."""

from __future__ import annotations

import difflib
import json
import os
import sys
import sysconfig
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

from molpipe.data.errors import DataError

MANIFEST = "manifest.json"


@dataclass(frozen=True)
class DatasetEntry:
    """One bundled data set, as described by ``datasets/manifest.json``."""

    name: str
    path: Path
    smiles_column: str
    targets: tuple[str, ...]
    task: str
    units: dict
    rows: int
    description: str
    source: dict
    citation: str
    licence: str


def dataset_dirs() -> list[Path]:
    """Where the bundled data sets may be, in the order they are looked for:
    ``$MOLPIPE_DATASETS``, beside the package (a checkout or editable install), then the
    copy a regular install puts in ``<prefix>/share/molpipe/datasets``."""
    candidates = []
    if os.environ.get("MOLPIPE_DATASETS"):
        candidates.append(Path(os.environ["MOLPIPE_DATASETS"]))
    package = Path(__file__).resolve().parents[1]        # .../molpipe
    candidates += [package.parent / "datasets", package / "datasets"]
    for prefix in dict.fromkeys((sysconfig.get_path("data"), sys.prefix)):
        candidates.append(Path(prefix) / "share" / "molpipe" / "datasets")
    return candidates


def datasets_dir() -> Path:
    """The first of ``dataset_dirs()`` that holds the manifest."""
    candidates = dataset_dirs()
    for d in candidates:
        if (d / MANIFEST).is_file():
            return d
    shown = ", ".join(str(d) for d in candidates)
    raise DataError(f"bundled data sets not found (looked in {shown}); "
                    "set MOLPIPE_DATASETS to the datasets/ directory")


@lru_cache(maxsize=4)
def _load(directory: Path) -> tuple[DatasetEntry, ...]:
    manifest = json.loads((directory / MANIFEST).read_text(encoding="utf-8"))
    return tuple(
        DatasetEntry(name=d["name"], path=directory / d["file"], smiles_column=d["smiles_column"],
                     targets=tuple(d["targets"]), task=d["task"], units=d["units"],
                     rows=d["rows"], description=d["description"], source=d["source"],
                     citation=d["citation"], licence=d["licence"])
        for d in manifest["datasets"])


def list_datasets() -> list[DatasetEntry]:
    """Every bundled data set, in manifest order."""
    return list(_load(datasets_dir()))


def file_stem(path: str | Path) -> str:
    """The file name without its suffixes, compression included: ``hiv.csv.gz`` -> ``hiv``."""
    path = Path(path)
    if path.suffix.lower() == ".gz":
        path = Path(path.stem)
    return path.stem


def _aliases(entry: DatasetEntry) -> set[str]:
    """The names ``entry`` answers to: its own and its file's stem, lower case."""
    return {entry.name.lower(), file_stem(entry.path).lower()}


def is_dataset_name(name: str) -> bool:
    """Whether ``name`` names a bundled data set (by name or file stem, any case)."""
    try:
        return any(name.lower() in _aliases(e) for e in list_datasets())
    except DataError:
        return False


def get_dataset(name: str) -> DatasetEntry:
    """The bundled data set called ``name``; DataError with close names if unknown."""
    entries = list_datasets()
    for e in entries:
        if name.lower() in _aliases(e):
            return e
    known = sorted({a for e in entries for a in _aliases(e)})
    close = difflib.get_close_matches(name.lower(), known, n=3, cutoff=0.5)
    hint = f"did you mean {', '.join(close)}?" if close else "run `molpipe datasets` to list them"
    names = ", ".join(e.name for e in entries)
    raise DataError(f"unknown data set {name!r} (bundled: {names}); {hint}")


def find_by_path(path: str | Path) -> DatasetEntry | None:
    """The bundled data set whose file is ``path``, or None."""
    try:
        entries = list_datasets()
    except DataError:
        return None
    target = Path(path).resolve()
    return next((e for e in entries if e.path.resolve() == target), None)


def resolve_source(data: str | Path) -> tuple[Path, DatasetEntry | None]:
    """A CSV/SDF path or a bundled data set name -> (file, its bundled entry or None)."""
    path = Path(data)
    if path.exists():
        return path, find_by_path(path)
    if is_dataset_name(str(data)):
        entry = get_dataset(str(data))
        return entry.path, entry
    if not path.suffix and "/" not in str(data) and os.sep not in str(data):
        get_dataset(str(data))                      # unknown name: raises with close names
    return path, None
