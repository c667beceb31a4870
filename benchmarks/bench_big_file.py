"""build_store on a ~1 GB CSV: molecules/s and peak memory of the parent and its workers.

The CSV is streamed to /tmp by replicating a bundled set (never held in memory); the build
runs in a fresh child process (so its workers fork) while this process samples the memory
(RSS and PSS, from /proc) of the build's whole process tree every 0.2 s.

Run: nice -n 10 python benchmarks/bench_big_file.py [--size-mb 1024] [--dataset qm9]
     [--jobs 2] [--json out.json]        (--size-mb 50 for a quick check)
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent))

from scale.common import _memory_kib, _tree  # noqa: E402

from molpipe.data.registry import get_dataset  # noqa: E402
from molpipe.data.store import build_store  # noqa: E402

MIB = 2**20


def write_replicated(name: str, size_mb: float, path: Path) -> int:
    """Stream rows of the bundled set ``name`` to ``path`` until it holds ``size_mb``; rows."""
    entry = get_dataset(name)
    with open(entry.path, newline="", encoding="utf-8") as f:
        header = f.readline()
        rows = f.read().splitlines(keepends=True)          # the bundled set: a few MB
    rows = [r if r.endswith("\n") else r + "\n" for r in rows if r.strip()]
    limit, n, mean = int(size_mb * MIB), 0, sum(map(len, rows)) / len(rows)
    with open(path, "w", encoding="utf-8", newline="") as out:
        written = out.write(header)
        while written < limit:
            block = rows[: max(1, min(len(rows), int((limit - written) / mean)))]
            written += sum(map(len, block))
            out.writelines(block)
            n += len(block)
    return n


def child(src: str, out: str, jobs: int, targets: list[str]) -> None:
    """Build the store in this fresh process; print its summary and rusage peaks as JSON."""
    summary = build_store(src, out, n_jobs=jobs, targets=targets)
    kib = 1024
    print(json.dumps({
        "rows_read": summary["rows_read"], "rows_kept": summary["rows_kept"],
        "rows_rejected": summary["rows_rejected"], "seconds": round(summary["seconds"], 1),
        "mols_per_s": round(summary["mols_per_s"]),
        "maxrss_parent_mib": round(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib / MIB, 1),
        "maxrss_largest_worker_mib":
            round(resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib / MIB, 1),
    }))


def run_and_sample(cmd: list[str], every: float = 0.2) -> tuple[str, list[tuple]]:
    """Run ``cmd``; sample (seconds, n_processes, RSS sum, PSS sum, parent RSS) while it runs."""
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, stdout=subprocess.PIPE, text=True)
    samples = []
    while proc.poll() is None:
        tree = _tree(proc.pid)
        mem = [_memory_kib(p) for p in tree]
        samples.append((time.perf_counter() - t0, len(tree), sum(m[0] for m in mem),
                        sum(m[1] for m in mem), mem[0][0]))
        time.sleep(every)
    out = proc.stdout.read()
    if proc.returncode:
        raise SystemExit(f"build failed ({proc.returncode})")
    return out, samples


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size-mb", type=float, default=1024)
    parser.add_argument("--dataset", default="qm9")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    targets = list(get_dataset(args.dataset).targets)
    if args.child:
        return child(*args.child, args.jobs, targets)
    work = Path(tempfile.mkdtemp(prefix="molpipe-big-", dir=args.tmp))
    try:
        src = work / f"{args.dataset}-{args.size_mb:g}mb.csv"
        t = time.perf_counter()
        n_rows = write_replicated(args.dataset, args.size_mb, src)
        size = src.stat().st_size
        print(f"wrote {src}: {size / MIB:,.0f} MiB, {n_rows:,} rows in "
              f"{time.perf_counter() - t:.0f} s; load average {os.getloadavg()[0]:.2f}",
              flush=True)
        cmd = [sys.executable, __file__, "--dataset", args.dataset, "--jobs", str(args.jobs),
               "--child", str(src), str(work / "store")]
        out, samples = run_and_sample(cmd)
        result = json.loads(out.strip().splitlines()[-1])
        store_mib = sum(f.stat().st_size for f in (work / "store").iterdir()) / MIB
    finally:
        shutil.rmtree(work, ignore_errors=True)
    half = len(samples) // 2
    peak = lambda k, part=samples: round(max((s[k] for s in part), default=0) / 1024, 1)
    result.update({
        "file_mib": round(size / MIB), "dataset": args.dataset, "jobs": args.jobs,
        "store_mib": round(store_mib), "samples": len(samples),
        "peak_tree_rss_mib": peak(2), "peak_tree_pss_mib": peak(3),
        "peak_tree_pss_first_half_mib": peak(3, samples[:half]),
        "peak_tree_pss_second_half_mib": peak(3, samples[half:]),
        "peak_processes": max((s[1] for s in samples), default=0),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    })
    assert result["rows_read"] == n_rows == result["rows_kept"] + result["rows_rejected"]
    print(json.dumps(result, indent=2))
    print(f"{size / MIB:,.0f} MiB CSV, {n_rows:,} molecules: {result['mols_per_s']:,} molecules/s "
          f"on {args.jobs} jobs; peak memory of the build (parent + workers) "
          f"{result['peak_tree_pss_mib']:,} MiB PSS ({result['peak_tree_rss_mib']:,} MiB RSS); "
          f"first half {result['peak_tree_pss_first_half_mib']:,} MiB, second half "
          f"{result['peak_tree_pss_second_half_mib']:,} MiB")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
