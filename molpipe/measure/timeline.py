"""Pipeline timelines (AMPNet's FIG. 9) and worker utilization charts.

A *trace* is what ``trace.json`` holds — ``{"entries": [(worker, t_start, t_end, key, stage,
step, direction), ...], "workers": {id: name}, ...}`` — or a pair ``(entries, workers)``
(workers a {id: name} dict or a list of names), or the bare list of entries.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from molpipe.measure.canvas import figure as _figure, save as _save
from molpipe.runtime.trace import to_arrays

KEY_COLORS = "tab20"        # instance keys cycle through this colormap


def _as_trace(trace) -> tuple[dict[str, np.ndarray], dict[int, str]]:
    """Trace columns (``runtime.trace.to_arrays``) and worker names from any trace form."""
    if isinstance(trace, dict):
        entries, workers = trace.get("entries", []), trace.get("workers") or {}
    elif isinstance(trace, tuple) and len(trace) == 2 and isinstance(trace[1], (dict, list)):
        entries, workers = trace
    else:
        entries, workers = trace, {}
    if isinstance(workers, list):                       # names in worker-id order
        workers = dict(enumerate(workers))
    cols = to_arrays([tuple(e) for e in entries])
    names = {int(k): str(v) for k, v in workers.items()}
    for w in np.unique(cols["worker"]).tolist():
        names.setdefault(int(w), f"worker {w}")
    return cols, dict(sorted(names.items()))


def _key_index(keys: np.ndarray) -> np.ndarray:
    """A small integer per instance key (ints as they are, anything else by first sight)."""
    try:
        return keys.astype(np.int64)
    except (TypeError, ValueError):
        _, inverse = np.unique(keys.astype(str), return_inverse=True)
        return inverse


def draw_timeline(ax, trace, t_max: float | None = None, title: str = "",
                  legend: bool = True) -> None:
    """One row per worker, a bar per busy interval coloured by key; backward hatched, lighter."""
    from matplotlib import colormaps
    from matplotlib.collections import PolyCollection

    cols, names = _as_trace(trace)
    cmap = colormaps[KEY_COLORS]
    row = {w: i for i, w in enumerate(names)}
    y = np.array([row[int(w)] for w in cols["worker"]], dtype=float)
    a, b = cols["t_start"], cols["t_end"]
    colors = cmap(_key_index(cols["key"]) % cmap.N)
    backward = np.array([str(d).startswith("b") for d in cols["direction"]], dtype=bool)
    for mask, alpha, hatch in ((~backward, 1.0, None), (backward, 0.45, "////")):
        if not mask.any():
            continue
        h = 0.8
        verts = [[(s, yy - h / 2), (s, yy + h / 2), (e, yy + h / 2), (e, yy - h / 2)]
                 for s, e, yy in zip(a[mask], b[mask], y[mask])]
        fc = colors[mask].copy()
        fc[:, 3] = alpha
        ax.add_collection(PolyCollection(verts, facecolors=fc, edgecolors="none", hatch=hatch,
                                         linewidths=0))
    ax.set_yticks(range(len(names)), list(names.values()))
    ax.set_ylim(len(names) - 0.5, -0.5)
    end = t_max if t_max is not None else (float(b.max()) if b.size else 1.0)
    ax.set_xlim(0, end * 1.01 or 1.0)
    ax.set_xlabel("time since the epoch started (s)")
    ax.set_ylabel("worker")
    ax.set_title(title)
    ax.grid(axis="x", alpha=0.3)
    if legend:
        ax.legend(handles=_direction_patches(), loc="upper right", fontsize=8, framealpha=0.8)


def _direction_patches():
    from matplotlib.patches import Patch

    return [Patch(facecolor="0.4", label="forward"),
            Patch(facecolor="0.4", alpha=0.45, hatch="////", label="backward")]


def plot_timelines(traces: dict, path: str | Path, title: str = "") -> Path:
    """Several runs' timelines one above the other on one time scale: {"async": trace, ...}."""
    fig = _figure()
    parsed = {name: _as_trace(t) for name, t in traces.items()}
    t_max = max((float(c["t_end"].max()) for c, _ in parsed.values() if c["t_end"].size),
                default=1.0)
    axes = fig.subplots(len(traces), 1, sharex=True, squeeze=False)[:, 0]
    for ax, (name, trace) in zip(axes, traces.items()):
        cols, _ = parsed[name]
        busy = float((cols["t_end"] - cols["t_start"]).sum())
        span = float(cols["t_end"].max()) if cols["t_end"].size else 0.0
        draw_timeline(ax, trace, t_max=t_max, legend=False,
                      title=f"{name}: {span:.3f} s, {len(cols['t_end'])} busy intervals, "
                            f"{busy:.3f} worker-seconds busy")
    for ax in axes[:-1]:
        ax.set_xlabel("")
    fig.suptitle(title or "pipeline timeline (colour: instance key)")
    fig.legend(handles=_direction_patches(), loc="upper right", ncols=2, fontsize=9)
    return _save(fig, path)


def plot_utilization(utilization: dict, path: str | Path, title: str = "") -> Path:
    """One horizontal bar per worker: percentage of wall time spent computing."""
    fig = _figure()
    ax = fig.subplots()
    names = [str(k) for k in utilization]
    values = [100.0 * float(v) for v in utilization.values()]
    bars = ax.barh(range(len(names)), values, color="tab:green")
    for bar, v in zip(bars, values):
        ax.text(min(v, 100.0) + 1, bar.get_y() + bar.get_height() / 2, f"{v:.1f}%",
                va="center")
    ax.set_yticks(range(len(names)), names)
    ax.set_ylim(len(names) - 0.5, -0.5)
    ax.set_xlim(0, 110)
    ax.set_xlabel("utilization (% of the epoch's wall time busy)")
    ax.set_ylabel("worker")
    ax.set_title(title or "worker utilization (last training epoch)")
    ax.grid(axis="x", alpha=0.3)
    return _save(fig, path)


# -- a whole run -------------------------------------------------------------------------
