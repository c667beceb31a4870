"""Cold start: seconds to the end of epoch 1 of ``molpipe train esol --epochs 1`` on a fresh
clone (no numba cache: numba keys it by the sources' paths and mtimes) with an empty store
cache, against a second, warm run of the same clone.

Run: python benchmarks/bench_cold_start.py [--revs HEAD~1 HEAD] [--repeat 3]
     [--json benchmarks/results/cold-start.json]

Every repetition clones each revision anew (git clone of this repository) into a temporary
directory and runs it cold then warm, the revisions taking turns. The interpreter is this
one (its site-packages give numba, RDKit, ...); the clone comes first on PYTHONPATH, as an
editable install would put it. Reported per run: seconds from launch to the line of epoch 1,
seconds of the whole command, the epoch's own seconds (metrics.csv) and the CPU seconds of
the command and its children.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import platform
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
COMMAND = ["train", "esol", "--epochs", "1"]


def cpu_children() -> float:
    r = resource.getrusage(resource.RUSAGE_CHILDREN)
    return r.ru_utime + r.ru_stime


def run_once(clone: Path, cache: Path, out: Path) -> dict:
    """One ``molpipe train esol --epochs 1`` in ``clone``: seconds to epoch 1's line, whole."""
    env = {k: v for k, v in os.environ.items() if k != "NUMBA_CACHE_DIR"}
    env.update(PYTHONPATH=str(clone), MOLPIPE_CACHE=str(cache), PYTHONUNBUFFERED="1")
    cmd = [sys.executable, "-c", "from cli import app; app()", *COMMAND, "--out", str(out)]
    cpu0, t0 = cpu_children(), time.perf_counter()
    proc = subprocess.Popen(cmd, cwd=clone, env=env, stdout=subprocess.PIPE,
                            stderr=subprocess.STDOUT, text=True)
    to_epoch = None
    lines = []
    for line in proc.stdout:
        lines.append(line)
        if to_epoch is None and line.lstrip().startswith("epoch 1/"):
            to_epoch = time.perf_counter() - t0
    proc.wait()
    whole = time.perf_counter() - t0
    if proc.returncode:
        raise RuntimeError(f"{cmd} failed ({proc.returncode}):\n{''.join(lines[-20:])}")
    with open(out / "metrics.csv", newline="") as f:
        row = next(csv.DictReader(f))
    return {"to_epoch1_s": round(to_epoch, 2), "whole_s": round(whole, 2),
            "epoch_s": round(float(row["epoch_seconds"]), 2),
            "cpu_s": round(cpu_children() - cpu0, 2)}


def cold_and_warm(rev: str, work: Path) -> dict:
    """A fresh clone of ``rev``, an empty store cache: one cold run, then one warm."""
    clone, cache = work / "clone", work / "stores"
    subprocess.run(["git", "clone", "-q", str(REPO), str(clone)], check=True)
    subprocess.run(["git", "-C", str(clone), "checkout", "-q", rev], check=True)
    commit = subprocess.run(["git", "-C", str(clone), "rev-parse", "--short", "HEAD"],
                            check=True, capture_output=True, text=True).stdout.strip()
    cold = run_once(clone, cache, work / "run-cold")
    warm = run_once(clone, cache, work / "run-warm")
    return {"rev": rev, "commit": commit, "cold": cold, "warm": warm,
            "cold_minus_warm_to_epoch1_s": round(cold["to_epoch1_s"] - warm["to_epoch1_s"], 2)}


def summary(results: list[dict]) -> dict:
    out = {}
    for rev in dict.fromkeys(r["rev"] for r in results):
        rs = [r for r in results if r["rev"] == rev]
        med = lambda xs: sorted(xs)[len(xs) // 2]
        out[rev] = {"commit": rs[0]["commit"], "n": len(rs),
                    "cold_to_epoch1_s": med([r["cold"]["to_epoch1_s"] for r in rs]),
                    "warm_to_epoch1_s": med([r["warm"]["to_epoch1_s"] for r in rs]),
                    "cold_minus_warm_s": med([r["cold_minus_warm_to_epoch1_s"] for r in rs]),
                    "cold_whole_s": med([r["cold"]["whole_s"] for r in rs]),
                    "warm_whole_s": med([r["warm"]["whole_s"] for r in rs]),
                    "cold_cpu_s": med([r["cold"]["cpu_s"] for r in rs])}
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--revs", nargs="+", default=["HEAD"], help="revisions, taking turns")
    ap.add_argument("--repeat", type=int, default=3)
    ap.add_argument("--json", type=Path, default=REPO / "benchmarks/results/cold-start.json")
    args = ap.parse_args()
    results = []
    for i in range(args.repeat):
        for rev in args.revs:
            work = Path(tempfile.mkdtemp(prefix="molpipe-cold-"))
            try:
                results.append(cold_and_warm(rev, work))
            finally:
                shutil.rmtree(work, ignore_errors=True)
            print(json.dumps(results[-1]), flush=True)
    report = {"command": "molpipe " + " ".join(COMMAND), "cores": os.cpu_count(),
              "python": platform.python_version(),
              "load_average": os.getloadavg(), "results": results,
              "median": summary(results)}
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps(report, indent=1) + "\n")
    print(json.dumps(report["median"], indent=1))


if __name__ == "__main__":
    main()
