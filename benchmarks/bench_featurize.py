"""Featurize + store throughput (molecules/s) and peak memory of a 100,000-molecule build.

Run: python benchmarks/bench_featurize.py [--jobs 2] [--n-big 100000] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from molpipe.chem.featurize import featurize
from molpipe.data.registry import get_dataset
from molpipe.data.store import build_store


def featurize_rate(name: str) -> float:
    """Molecules/s of featurize() alone (parse + features + plan), one process."""
    entry = get_dataset(name)
    with open(entry.path, newline="") as f:
        smiles = [r[entry.smiles_column] for r in csv.DictReader(f)]
    t = time.perf_counter()
    for s in smiles:
        featurize(s)
    return len(smiles) / (time.perf_counter() - t)


def store_rate(name: str, jobs: int, out: Path) -> dict:
    """Molecules/s of build_store (read, featurize on ``jobs`` processes, write)."""
    summary = build_store(get_dataset(name).path, out / name, n_jobs=jobs)
    return {"rows": summary["rows_read"], "seconds": round(summary["seconds"], 3),
            "mols_per_s": round(summary["mols_per_s"])}


def replicate_qm9(n: int, path: Path) -> None:
    """Write ``n`` rows made by repeating the QM9 subset (the full QM9 is not bundled)."""
    with open(get_dataset("qm9").path, newline="") as f:
        reader = csv.reader(f)
        header, rows = next(reader), list(reader)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(header)
        for i in range(n):
            w.writerow(rows[i % len(rows)])


def child_big(src: str, out: str, jobs: int) -> None:
    """Build the big store in this (fresh) process; print throughput and peak RSS as JSON."""
    targets = list(get_dataset("qm9").targets)
    summary = build_store(src, out, n_jobs=jobs, targets=targets)
    kib = 1024
    self_rss = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss * kib
    child_rss = resource.getrusage(resource.RUSAGE_CHILDREN).ru_maxrss * kib
    print(json.dumps({"rows": summary["rows_read"], "seconds": round(summary["seconds"], 2),
                      "mols_per_s": round(summary["mols_per_s"]),
                      "peak_rss_main_mib": round(self_rss / 2**20, 1),
                      "peak_rss_largest_child_mib": round(child_rss / 2**20, 1),
                      "peak_rss_main_plus_child_x_jobs_mib":
                          round((self_rss + jobs * child_rss) / 2**20, 1)}))


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--n-big", type=int, default=100_000)
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--child", nargs=2, help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        return child_big(*args.child, args.jobs)
    results = {"machine": {"cpus": os.cpu_count(), "python": platform.python_version(),
                           "load_avg_1min_at_start": round(os.getloadavg()[0], 2)},
               "jobs": args.jobs}
    print("load average at start (other processes compete for the cores):",
          results["machine"]["load_avg_1min_at_start"], flush=True)
    with tempfile.TemporaryDirectory() as tmp:
        tmp = Path(tmp)
        for name in ("qm9", "lipo"):
            results[name] = {"featurize_1proc_mols_per_s": round(featurize_rate(name)),
                             "store": store_rate(name, args.jobs, tmp)}
            print(name, json.dumps(results[name]), flush=True)
        src = tmp / "qm9_x.csv"
        replicate_qm9(args.n_big, src)
        out = subprocess.run([sys.executable, __file__, "--jobs", str(args.jobs), "--child",
                              str(src), str(tmp / "big")],
                             check=True, capture_output=True, text=True).stdout
        results["qm9_replicated"] = json.loads(out.strip().splitlines()[-1])
        print("qm9 x", args.n_big, json.dumps(results["qm9_replicated"]), flush=True)
    big = results["qm9_replicated"]
    peak = big["peak_rss_main_plus_child_x_jobs_mib"]
    for name in ("qm9", "lipo"):
        rate = results[name]["store"]["mols_per_s"]
        print(f"{name}: store {rate} mol/s (target >= 3000: {'met' if rate >= 3000 else 'MISSED'})")
    print(f"{args.n_big} molecules: peak RSS <= {peak} MiB, main + {args.jobs} x largest child "
          f"(target < 1024 MiB: {'met' if peak < 1024 else 'MISSED'})")
    results["machine"]["load_avg_1min_at_end"] = round(os.getloadavg()[0], 2)
    print("load average at end:", results["machine"]["load_avg_1min_at_end"])
    if args.json:
        args.json.write_text(json.dumps(results, indent=2) + "\n")


if __name__ == "__main__":
    main()
