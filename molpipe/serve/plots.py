"""The online learning curve of a service directory: prequential error against rows observed."""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molpipe.measure.canvas import figure, save
from molpipe.serve.prequential import FILE, WINDOW, read_prequential, windowed_error

MAX_TARGETS = 6


def plot_prequential(directory: str | Path, path: str | Path | None = None,
                     window: int = WINDOW) -> Path:
    """prequential.png: each row's prediction before it was trained on, as the RMSE over
    the trailing ``window`` rows and the running RMSE over all rows so far, per target."""
    directory = Path(directory)
    targets, seq, Y, P = read_prequential(directory / FILE)
    if not len(seq):
        raise ValueError(f"{directory / FILE}: no rows yet")
    shown = targets[:MAX_TARGETS]
    fig = figure()
    axes = np.atleast_1d(fig.subplots(len(shown), 1, sharex=True, squeeze=False)[:, 0])
    rows = np.arange(1, len(seq) + 1)
    trailing = windowed_error(Y, P, window)
    running = windowed_error(Y, P, len(seq))
    for j, (ax, t) in enumerate(zip(axes, shown)):
        ax.plot(rows, trailing[:, j], color="tab:blue", label=f"last {window} rows")
        ax.plot(rows, running[:, j], color="tab:gray", ls="--", label="all rows so far")
        ax.set_ylabel(f"RMSE, {t}")
        ax.grid(alpha=0.3)
        ax.legend(loc="upper right")
    axes[-1].set_xlabel("rows observed (each predicted before it was trained on)")
    fig.suptitle(f"prequential error ({directory.name})")
    return save(fig, path or directory / "plots" / "prequential.png")
