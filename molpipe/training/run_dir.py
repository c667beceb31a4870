"""A run directory: model/, report.json, settings.json (and config.toml), metrics.csv,
split.json, test predictions, the trace, and the rejects of its data; what report.json says
of the machine."""

from __future__ import annotations

import csv
import json
import os
import platform
import shutil
from pathlib import Path

import numpy as np

import molpipe
from molpipe.data.build import REJECTED_CELLS
from molpipe.io.model import save_model
from molpipe.runtime.trace import write_trace
from molpipe.training.session import Prepared

#: the run's settings, as ``TrainConfig.from_file`` (and ``molpipe train --config``) read them
SETTINGS = "settings.json"
CONFIG_TOML = "config.toml"      # the same settings as TOML, to read and edit by hand


def versions() -> dict:
    import numba
    import rdkit

    return {"molpipe": molpipe.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "rdkit": rdkit.__version__, "python": platform.python_version()}


def model_meta(prep: Prepared) -> dict:
    store = prep.store
    return {"atom_dim": int(store.atom_dim), "bond_dim": int(store.bond_dim),
            "targets": prep.targets, "task": prep.task,
            "featurizer_version": store.meta.get("featurizer_version"),
            "min_rounds": store.meta.get("min_rounds"), "max_rounds": store.meta.get("max_rounds")}


def target_units(data, targets: list[str]) -> dict[str, str]:
    """{target: unit} of a bundled data set's manifest ({} for a file of one's own)."""
    from molpipe.data.registry import find_by_path, get_dataset, is_dataset_name

    entry = get_dataset(str(data)) if is_dataset_name(str(data)) else find_by_path(data)
    units = getattr(entry, "units", None) or {}
    return {t: units[t] for t in targets if units.get(t)}


def kernels_cached() -> bool:
    """Whether numba has compiled molpipe's kernels into its on-disk cache before."""
    from molpipe import kernels

    root = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(kernels.__file__).parent / "__pycache__")
    return root.exists() and any(root.rglob("*.nbi"))


def keep_rejects(store, out_dir: Path, source: str) -> list[str]:
    """Copy the store's rejects (rows that are not molecules) and rejected cells (targets that
    are not numbers) into the run directory; a warning for rejected rows (target_warnings
    speaks of the cells)."""
    from molpipe.data.build import REJECTS

    out = []
    n_rows = int(store.meta.get("rows_rejected") or 0)
    n_cells = sum(f["count"] for f in store.targets_not_numbers.values())
    for name, n, what in ((REJECTS, n_rows, "rows"), (REJECTED_CELLS, n_cells, "cells")):
        if n and (store.path / name).exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.path / name, out_dir / name)
            if what == "rows":
                out.append(f"{source}: {n} of {store.meta.get('rows_read', '?')} rows are not "
                           f"molecules RDKit reads; left out, listed with the reason in "
                           f"{out_dir / name}")
    return out


def write_run(out_dir: Path, config, network, prep: Prepared, report: dict, history: list,
              split: dict, P_test: np.ndarray, trace, meta: dict,
              domain: dict | None = None) -> None:
    """The run directory: model/, settings.json (``config``, a ``TrainConfig``), metrics.csv,
    split.json, test predictions, trace, and report.json last."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = prep.store
    save_model(out_dir / "model", network.config, network.state_dict(), meta, domain)
    (out_dir / SETTINGS).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
    (out_dir / CONFIG_TOML).write_text(config.to_toml(), encoding="utf-8")
    write_split(out_dir / "split.json", split)
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    with open(out_dir / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "smiles", *prep.targets, *(f"pred_{t}" for t in prep.targets)])
        smiles = store.smiles
        for i, r in enumerate(split["test"]):
            w.writerow([int(store.source_row[r]), smiles[r], *store.targets[r].tolist(),
                        *P_test[i].tolist()])
    if trace is not None:
        write_trace(out_dir / "trace.json", trace["entries"], util=trace["utilization"],
                    wall=trace["wall"])
        doc = json.loads((out_dir / "trace.json").read_text())
        doc["workers"] = {str(k): v for k, v in trace["workers"].items()}
        (out_dir / "trace.json").write_text(json.dumps(doc))
    # report.json last, by rename: its presence means the run directory is complete
    replace_json(out_dir / "report.json", report)


def write_split(path: Path, split: dict, block: int = 65536) -> None:
    """``split`` ({name: int array}) as JSON lists, written a block of rows at a time (the
    same text as ``json.dumps`` of the lists, without a Python int per row at once)."""
    with open(path, "w", encoding="utf-8") as f:
        f.write("{")
        for n, (name, rows) in enumerate(split.items()):
            f.write(f"{', ' if n else ''}{json.dumps(name)}: [")
            for lo in range(0, len(rows), block):
                f.write((", " if lo else "") + ", ".join(map(str, rows[lo:lo + block].tolist())))
            f.write("]")
        f.write("}")


def replace_json(path: Path, doc) -> None:
    """Write ``doc`` as JSON beside ``path`` and rename it into place (a reader sees the old
    file or the new one, never half of one)."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(json.dumps(doc, indent=2, default=float) + "\n", encoding="utf-8")
    os.replace(tmp, path)
