"""What a training run checks in its data before it starts, and the warnings it gives.

Errors stop the run with one line naming the file, the column, the row and the value;
warnings say what is odd and what was done instead, and are written to report.json too.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molpipe.data.errors import DataError


def check_labels(store, task: str, source: str) -> None:
    """DataError at the first classification label that is not 0, 1 or empty.

    ``source`` names the data in the message (the file or bundled set); rows are the
    file's 1-based data rows.
    """
    if task != "classification":
        return
    Y = np.asarray(store.targets)
    bad = np.isfinite(Y) & ~np.isin(Y, (0.0, 1.0))
    if not bad.any():
        return
    i, j = (int(k) for k in np.argwhere(bad)[0])
    n = int(bad.sum())
    more = f" ({n - 1} more such cells)" if n > 1 else ""
    raise DataError(f"{source}: column {store.target_names[j]!r}, row {int(store.source_row[i])}: "
                    f"value {Y[i, j]:g} is not a class label; a classification target holds 0, 1 "
                    f"or an empty cell (missing){more}")


def check_targets(store, source: str) -> None:
    """DataError when there is nothing to learn: no target column, or a target without a
    single number (say a column of text), naming the column and its first cells."""
    if not store.target_names:
        raise DataError(f"{source}: no target column to train on; name one with --target "
                        "(a column of numbers, or 0/1 labels)")
    Y = np.asarray(store.targets)
    for j, name in enumerate(store.target_names):
        if np.isfinite(Y[:, j]).any():
            continue
        found = store.targets_not_numbers.get(name)
        shown = (": " + ", ".join(f"row {r}: {v!r}" for r, v in zip(found["rows"], found["values"]))
                 if found else "")
        raise DataError(f"{source}: target column {name!r} holds no numbers{shown}; a target "
                        "holds numbers (or 0/1 labels), empty cells where unknown")


#: fewer usable molecules than this are refused unless the split was given as a file
MIN_MOLECULES = 10


def check_split(split: dict, n_rows: int, source: str, asked: bool = False) -> list[str]:
    """DataError when nothing is left to train on, or (unless the split was ``asked`` for
    as a file) fewer than MIN_MOLECULES; warnings for an empty validation or test split,
    saying what the run does instead."""
    if n_rows < MIN_MOLECULES and not asked:
        raise DataError(f"{source}: {n_rows} usable molecule(s); a run needs at least "
                        f"{MIN_MOLECULES}, or the split leaves validation and test (nearly) "
                        "empty; to train on fewer anyway, give the split as a file (--split "
                        "FILE.json with train, val and test row lists)")
    if len(split["train"]) == 0:
        raise DataError(f"{source}: {n_rows} usable molecule(s) leave the training split empty; "
                        "a run needs at least a few molecules to train on")
    out = []
    if len(split["val"]) == 0:
        out.append(f"the validation split is empty ({n_rows} molecules): no validation metrics, "
                   "no early stopping; the model of the last epoch is kept")
    if len(split["test"]) == 0:
        out.append(f"the test split is empty ({n_rows} molecules): no test metrics")
    return out


def target_warnings(store, rows: np.ndarray, task: str, cells_file=None) -> list[str]:
    """Warnings about the targets of the training ``rows``: a constant regression target
    (trained with unit scale), a classification task with one class (its AUC is left out of
    the mean), cells that were not numbers (read as missing; all of them in ``cells_file``
    if it exists)."""
    out = []
    Y = np.asarray(store.targets[rows], np.float64)
    for j, name in enumerate(store.target_names):
        known = Y[:, j][np.isfinite(Y[:, j])]
        if known.size == 0:
            out.append(f"target {name!r} has no value in the training split: it adds nothing "
                       "to the loss")
        elif task == "regression" and np.ptp(known) == 0:
            out.append(f"target {name!r} is constant in the training split ({known[0]:g}): "
                       "trained with unit scale")
        elif task == "classification" and np.unique(known).size == 1:
            out.append(f"task {name!r} has one class ({known[0]:g}) in the training split: "
                       "its AUC is left out of the mean")
    for name, found in store.targets_not_numbers.items():
        shown = ", ".join(f"row {r}: {v!r}" for r, v in zip(found["rows"], found["values"]))
        listed = (f"; all in {cells_file}" if cells_file is not None
                  and Path(cells_file).exists() else "")
        out.append(f"target {name!r}: {found['count']} cell(s) are not numbers ({shown}"
                   f"{' …' if found['count'] > len(found['rows']) else ''}); read as missing"
                   f"{listed}")
    return out
