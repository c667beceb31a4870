"""What the sections of ``bench_scale.py`` share: paths, fresh child processes, and the
memory of a process tree sampled from /proc."""

from __future__ import annotations

import gzip
import itertools
import os
import subprocess
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[2]
SCRIPT = ROOT / "benchmarks" / "bench_scale.py"
MOSES_ROWS = 1_584_663
MIB = 2**20


def moses_path() -> Path:
    """The MOSES training set (``$MOLPIPE_MOSES``, else ``../shared/data`` beside the repo)."""
    env = os.environ.get("MOLPIPE_MOSES")
    return Path(env) if env else ROOT.parent / "shared" / "data" / "moses_train.csv.gz"


def moses_head(n: int, out: Path) -> Path:
    """The header and first ``n`` rows of the MOSES file, as ``out`` (.csv.gz)."""
    with gzip.open(moses_path(), "rb") as f, gzip.open(out, "wb", compresslevel=1) as g:
        g.writelines(itertools.islice(f, n + 1))
    return out


def child_env(tree: Path | None = None) -> dict:
    """The environment of a child: molpipe imported from ``tree`` (default: this checkout)."""
    return {**os.environ, "PYTHONPATH": str(tree or ROOT)}


def _tree(root: int) -> list[int]:
    """``root`` and all its descendants (from /proc/*/stat parent ids)."""
    parent: dict[int, int] = {}
    for d in os.listdir("/proc"):
        if d.isdigit():
            try:
                with open(f"/proc/{d}/stat") as f:
                    parent[int(d)] = int(f.read().rsplit(")", 1)[1].split()[1])
            except (OSError, IndexError, ValueError):
                continue
    tree, frontier = [root], [root]
    while frontier:
        frontier = [p for p, pp in parent.items() if pp in frontier]
        tree += frontier
    return tree


def _memory_kib(pid: int) -> tuple[int, int]:
    """(RSS, PSS) of ``pid`` in KiB; (0, 0) once it is gone."""
    try:
        with open(f"/proc/{pid}/smaps_rollup") as f:
            fields = dict(line.split(":", 1) for line in f if ":" in line and "-" not in line[:12])
        return int(fields["Rss"].split()[0]), int(fields["Pss"].split()[0])
    except (OSError, KeyError, ValueError):
        return 0, 0


def _hwm_kib(pid: int) -> int:
    """The peak RSS (VmHWM) of ``pid`` since it started (or exec'd), KiB; 0 once gone."""
    try:
        with open(f"/proc/{pid}/status") as f:
            return next((int(line.split()[1]) for line in f if line.startswith("VmHWM")), 0)
    except (OSError, ValueError):
        return 0


def run_sampled(cmd: list[str], every: float = 0.5) -> tuple[str, dict]:
    """Run ``cmd``; its stdout and the peaks of its process tree's memory: the largest sums
    of RSS and PSS seen (every ``every`` s) and the sum over its processes of their own peak
    RSS (VmHWM: an upper bound of the tree's peak, short spikes included)."""
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    peak_rss = peak_pss = processes = 0
    hwm: dict[int, int] = {}
    loads = []
    while proc.poll() is None:
        tree = _tree(proc.pid)
        mem = [_memory_kib(p) for p in tree]
        for p in tree:
            hwm[p] = max(hwm.get(p, 0), _hwm_kib(p))
        peak_rss = max(peak_rss, sum(m[0] for m in mem))
        peak_pss = max(peak_pss, sum(m[1] for m in mem))
        processes = max(processes, len(mem))
        loads.append(os.getloadavg()[0])
        time.sleep(every)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode})")
    return out, {"peak_tree_rss_mib": round(peak_rss / 1024, 1),
                 "sum_of_process_peak_rss_mib": round(sum(hwm.values()) / 1024, 1),
                 "peak_tree_pss_mib": round(peak_pss / 1024, 1), "processes": processes,
                 "load_avg_1min_mean": round(sum(loads) / max(len(loads), 1), 2),
                 "load_avg_1min_max": round(max(loads, default=0), 2)}
