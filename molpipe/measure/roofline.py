"""A kernel roofline: every stage's forward and backward in FLOP/s against one core's float32
matmul rate, and every worker's working set against the L2 cache.

For each stage of the network ``molpipe train`` builds, on one real instance: thread CPU time
per call (median over repeats, one BLAS thread), FLOPs per call counted from the shapes
(``molpipe.measure.flops``), the rate of a plain matmul of the same shapes as the stage's
matmuls (what BLAS makes of matrices that small), the rate of one large matmul (the core's
practical peak), and the working set: parameters plus the activations the stage caches for
one instance (every step of it) until its backward — what the worker must keep close.
"""

from __future__ import annotations

import os
import time
from pathlib import Path

import numpy as np
from numba import njit

from molpipe.measure.flops import STAGE_FLOPS, Count, Shapes
from molpipe.runtime.memory import keep_freed_memory

CACHE_DIR = Path("/sys/devices/system/cpu/cpu0/cache")


def _parse_size(text: str) -> int:
    text = text.strip().upper()
    scale = {"K": 1 << 10, "M": 1 << 20, "G": 1 << 30}.get(text[-1:], 1)
    return int(text.rstrip("KMG")) * scale


def l2_cache(cache_dir: Path = CACHE_DIR) -> tuple[int | None, str]:
    """(bytes, where it was read) of cpu0's level-2 data (or unified) cache; (None, why) when
    neither sysfs nor ``getconf LEVEL2_CACHE_SIZE`` tells."""
    for d in sorted(cache_dir.glob("index*")):
        try:
            if (d / "level").read_text().strip() == "2" and \
                    (d / "type").read_text().strip() != "Instruction":
                return _parse_size((d / "size").read_text()), str(d / "size")
        except (OSError, ValueError):
            continue
    try:
        size = os.sysconf("SC_LEVEL2_CACHE_SIZE")
    except (ValueError, OSError):
        size = 0
    if size > 0:
        return int(size), "getconf LEVEL2_CACHE_SIZE"
    return None, "not found (sysfs, getconf)"


@njit(nogil=True, cache=True)
def _dots(As, Bs):
    """np.dot of every pair: numba's np.dot, the BLAS call the kernels make."""
    for i in range(len(As)):
        np.dot(As[i], Bs[i])


def median_cpu_seconds(f, repeat: int) -> float:
    """Median CPU time of the calling thread for ``f()``, after one warm-up call. Thread CPU
    time, not wall time: with one BLAS thread all work runs in this thread, and on a shared,
    loaded machine wall time measures the neighbours."""
    f()
    ts = []
    for _ in range(repeat):
        t0 = time.thread_time()
        f()
        ts.append(time.thread_time() - t0)
    return float(np.median(ts))


def matmul_gflops(shapes: list[tuple[int, int, int]], repeat: int, dtype=np.float32) -> float | None:
    """GFLOP/s of plain C-contiguous matmuls of ``shapes`` ((m, k, n) each), called in turn
    through numba's np.dot (output allocated per call, as in the kernels); None without any."""
    if not shapes:
        return None
    rng = np.random.default_rng(0)
    from numba.typed import List

    As, Bs = List(), List()
    for m, k, n in shapes:
        As.append(rng.standard_normal((m, k)).astype(dtype))
        Bs.append(rng.standard_normal((k, n)).astype(dtype))
    t = median_cpu_seconds(lambda: _dots(As, Bs), repeat)
    return sum(2 * m * k * n for m, k, n in shapes) / t / 1e9


def peak_gflops(n: int = 2048, repeat: int = 5) -> dict:
    """One core's practical float32 peak: an n x n by n x n matmul, through numba's np.dot
    (scipy's BLAS, the kernels') and through numpy's own ``@``."""
    rng = np.random.default_rng(0)
    A = rng.standard_normal((n, n)).astype(np.float32)
    B = rng.standard_normal((n, n)).astype(np.float32)
    flops = 2 * n ** 3
    return {"n": n, "numba_gflops": flops / median_cpu_seconds(lambda: _dots_one(A, B), repeat) / 1e9,
            "numpy_gflops": flops / median_cpu_seconds(lambda: A @ B, repeat) / 1e9}


@njit(nogil=True, cache=True)
def _dots_one(A, B):
    return np.dot(A, B)


def nbytes(obj) -> int:
    """Bytes of every array in a (nested) tuple / list / dict."""
    if isinstance(obj, np.ndarray):
        return int(obj.nbytes)
    if isinstance(obj, (tuple, list)):
        return sum(nbytes(x) for x in obj)
    if isinstance(obj, dict):
        return sum(nbytes(x) for x in obj.values())
    return 0


def time_stages(network, inst, repeat: int) -> dict:
    """Per stage: calls per instance, and the median over ``repeat`` passes of the thread CPU
    time per call (us) of its forward and of its backward; the cache it held for one instance
    (bytes, every step) is measured on the way."""
    path = network.path(inst)
    out = {name: {"calls": sum(1 for n, _ in path if n == name), "fwd": [], "bwd": [],
                  "cached_bytes": 0} for name in network.stages}
    for r in range(repeat + 1):
        spent = {name: [0.0, 0.0] for name in network.stages}
        x: dict = {}
        for name, step in path:
            t0 = time.thread_time()
            x = network.stages[name].forward(r, step, x, inst, True)
            spent[name][0] += time.thread_time() - t0
        if r == 0:
            for name, stage in network.stages.items():
                out[name]["cached_bytes"] = nbytes(list(stage._cache.values()))
        dy: dict = {}
        for name, step in reversed(path):
            t0 = time.thread_time()
            dy = network.stages[name].backward(r, step, dy, inst)
            spent[name][1] += time.thread_time() - t0
        if r:                                  # the first pass warms (and compiles)
            for name, (f, b) in spent.items():
                out[name]["fwd"].append(f)
                out[name]["bwd"].append(b)
    network.zero_grad()
    for name, o in out.items():
        calls = max(o["calls"], 1)
        o["fwd"] = 1e6 * float(np.median(o["fwd"])) / calls
        o["bwd"] = 1e6 * float(np.median(o["bwd"])) / calls
    return out


def time_stages_warm(network, inst, repeat: int) -> dict:
    """Per stage: the median thread CPU time per call (us) of its forward and backward when
    the same call repeats back to back on the same inputs (its parameters and activations
    warm in this core's caches: a worker alone on its core whose working set fits), against
    ``time_stages``' calls in path order, each stage after all the others (the reference
    trainer's, one core for every stage)."""
    path = network.path(inst)
    xs, dys = {}, {}
    x: dict = {}
    for name, step in path:
        xs[(name, step)] = x
        x = network.stages[name].forward("warm", step, x, inst, True)
    dy: dict = {}
    for name, step in reversed(path):
        dys[(name, step)] = dy
        dy = network.stages[name].backward("warm", step, dy, inst)
    out = {}
    for name, stage in network.stages.items():
        calls = [(n, s) for n, s in path if n == name]
        if not calls:
            continue
        fwd, bwd = [], []
        for r in range(repeat + 1):
            f = b = 0.0
            for c in calls:
                t0 = time.thread_time()
                stage.forward("warm", c[1], xs[c], inst, True)
                t1 = time.thread_time()
                stage.backward("warm", c[1], dys[c], inst)
                f, b = f + t1 - t0, b + time.thread_time() - t1
            if r:
                fwd.append(f)
                bwd.append(b)
        out[name] = {"fwd": 1e6 * float(np.median(fwd)) / len(calls),
                     "bwd": 1e6 * float(np.median(bwd)) / len(calls)}
    network.zero_grad()
    return out


def stage_counts(network, inst) -> dict[str, tuple[Count, Count, int]]:
    """Per stage on ``inst``'s path: (forward, backward) counts summed over its calls, calls."""
    s = Shapes.of(network, inst)
    counts: dict[str, tuple[Count, Count, int]] = {}
    for name, step in network.path(inst):
        f, b = STAGE_FLOPS[name](s, step)
        if name in counts:
            F, B, c = counts[name]
            f = Count(F.matmuls + f.matmuls, _merged(F.other, f.other))
            b = Count(B.matmuls + b.matmuls, _merged(B.other, b.other))
            counts[name] = (f, b, c + 1)
        else:
            counts[name] = (f, b, 1)
    return counts


def _merged(a: dict, b: dict) -> dict:
    out = dict(a)
    for k, v in b.items():
        out[k] = out.get(k, 0) + v
    return out


def roofline(network, inst, repeat: int = 200, matmul_repeat: int | None = None,
             peak: dict | None = None) -> dict:
    """The roofline of ``network`` on ``inst`` (call under ``one_blas_thread()``): a dict with
    ``peak``, ``l2`` and one row per (stage, direction) — see ``ROW_KEYS``. Sets glibc's
    thresholds as every engine does (``keep_freed_memory``): without them the kernels' fresh
    outputs fault their pages in on every call inside a whole path's caches."""
    mallopt = keep_freed_memory()
    peak = peak or peak_gflops()
    l2, l2_source = l2_cache()
    times = time_stages(network, inst, repeat)
    warm = time_stages_warm(network, inst, repeat)
    counts = stage_counts(network, inst)
    rows = []
    for name, (f, b, calls) in counts.items():
        stage = network.stages[name]
        params = nbytes(stage.params)
        cached = times[name]["cached_bytes"]
        for direction, c in (("forward", f), ("backward", b)):
            us = times[name]["fwd" if direction == "forward" else "bwd"]
            us_warm = warm[name]["fwd" if direction == "forward" else "bwd"]
            flops = c.flops / calls
            gflops = flops / us / 1e3
            # one call's matmuls: the stage's shapes, per call, as the kernels run them
            same = matmul_gflops(c.matmuls[: max(1, len(c.matmuls) // calls)],
                                 matmul_repeat or repeat)
            rows.append({
                "stage": name, "direction": direction, "calls": calls, "us_per_call": us,
                "flops_per_call": flops, "matmul_fraction": c.matmul_flops / max(c.flops, 1),
                "gflops": gflops, "same_shapes_gflops": same,
                "of_same_shapes": gflops / same if same else None,
                "of_peak": gflops / peak["numba_gflops"], "us_per_call_warm": us_warm,
                "of_peak_warm": flops / us_warm / 1e3 / peak["numba_gflops"],
                "params_bytes": params, "cached_bytes": cached,
                "working_set_bytes": params + cached,
                "fits_l2": None if l2 is None else params + cached <= l2})
    return {"peak": peak, "l2_bytes": l2, "l2_source": l2_source, "mallopt": mallopt,
            "rows": rows}


ROW_KEYS = ("stage", "direction", "calls", "us_per_call", "flops_per_call", "matmul_fraction",
            "gflops", "same_shapes_gflops", "of_same_shapes", "of_peak", "us_per_call_warm",
            "of_peak_warm", "params_bytes",
            "cached_bytes", "working_set_bytes", "fits_l2")


def format_table(result: dict) -> str:
    """The roofline as a plain-text table."""
    p = result["peak"]
    l2 = result["l2_bytes"]
    lines = [f"peak: {p['n']}² float32 matmul, 1 BLAS thread: {p['numba_gflops']:.1f} GFLOP/s "
             f"(numba np.dot, the kernels' BLAS), {p['numpy_gflops']:.1f} GFLOP/s (numpy @)",
             f"L2: {'?' if l2 is None else f'{l2 / 1024:.0f} KiB'} ({result['l2_source']})",
             f"{'stage':9s} {'dir':4s} {'calls':>5s} {'us/call':>8s} {'MFLOP':>7s} {'mm%':>4s} "
             f"{'GFLOP/s':>7s} {'mm GF/s':>7s} {'of mm':>6s} {'of peak':>7s} {'warm us':>7s} "
             f"{'of pk':>5s} "
             f"{'params':>8s} {'cached':>8s} {'WS/L2':>6s}"]
    for r in result["rows"]:
        same = "-" if r["same_shapes_gflops"] is None else f"{r['same_shapes_gflops']:7.1f}"
        frac = "-" if r["of_same_shapes"] is None else f"{r['of_same_shapes']:6.2f}"
        ws = "-" if l2 is None else f"{r['working_set_bytes'] / l2:6.2f}"
        lines.append(
            f"{r['stage']:9s} {r['direction'][:4]:4s} {r['calls']:5d} {r['us_per_call']:8.1f} "
            f"{r['flops_per_call'] / 1e6:7.2f} {100 * r['matmul_fraction']:4.0f} "
            f"{r['gflops']:7.2f} {same:>7s} {frac:>6s} {r['of_peak']:7.3f} "
            f"{r['us_per_call_warm']:7.1f} {r['of_peak_warm']:5.2f} "
            f"{r['params_bytes'] / 1024:7.0f}K {r['cached_bytes'] / 1024:7.0f}K {ws:>6s}")
    return "\n".join(lines)
