"""molpipe fingerprint over a big file: molecules/s and peak memory of the command and its workers.

Runs ``python cli.py fingerprint --model RUN -i FILE -o OUT.npy`` in a fresh process while
this one samples the memory (RSS and PSS, from /proc) of its whole process tree every
0.5 s (``bench_big_file.run_and_sample``); then checks that the ``.npy`` loads with one row
per input row.

Run: nice -n 10 python benchmarks/bench_fingerprint.py --model /tmp/fp-model \
         --input ../shared/data/moses_train.csv.gz [--limit 100000] [--jobs 2] \
         [--json benchmarks/results/fingerprint-moses.json]
"""

from __future__ import annotations

import argparse
import gzip
import json
import os
import shutil
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.bench_big_file import run_and_sample  # noqa: E402

MIB = 2**20


def head(src: Path, n: int, dst: Path) -> None:
    """The header and first ``n`` data lines of the (gzip) CSV ``src`` into ``dst``, streamed."""
    opener = gzip.open if src.suffix == ".gz" else open
    with opener(src, "rt", encoding="utf-8", newline="") as f, \
            open(dst, "w", encoding="utf-8", newline="") as out:
        for i, line in enumerate(f):
            if i > n:
                break
            out.write(line)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="Only the first rows (0: all).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--layer", default="pooled")
    parser.add_argument("--json", type=Path, default=None)
    parser.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="molpipe-fp-", dir=args.tmp))
    try:
        src = args.input
        if args.limit:
            src = work / "head.csv"
            head(args.input, args.limit, src)
        out = work / "fp.npy"
        cmd = [sys.executable, str(REPO / "cli.py"), "fingerprint", "--model", str(args.model),
               "-i", str(src), "-o", str(out), "--jobs", str(args.jobs), "--layer", args.layer]
        print(" ".join(cmd), f"(load average {os.getloadavg()[0]:.2f})", flush=True)
        t0 = time.perf_counter()
        _, samples = run_and_sample(cmd, every=0.5)
        seconds = time.perf_counter() - t0
        F = np.load(out, mmap_mode="r")
        rows, width = F.shape
        failed = int(np.isnan(F[:, 0]).sum())
        out_mib = out.stat().st_size / MIB
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = lambda k: round(max((s[k] for s in samples), default=0) / 1024, 1)
    half = len(samples) // 2
    pss_half = lambda part: round(max((s[3] for s in part), default=0) / 1024, 1)
    result = {
        "command": "python cli.py fingerprint --model MODEL -i INPUT -o fp.npy "
                   f"--jobs {args.jobs} --layer {args.layer}",
        "model": str(args.model), "input": str(args.input), "limit": args.limit,
        "rows": rows, "failed": failed, "width": width, "npy_mib": round(out_mib),
        "seconds": round(seconds, 1), "molecules_per_second": round(rows / seconds),
        "peak_tree_rss_mib": peak(2), "peak_tree_pss_mib": peak(3),
        "peak_parent_rss_mib": peak(4),
        "peak_tree_pss_first_half_mib": pss_half(samples[:half]),
        "peak_tree_pss_second_half_mib": pss_half(samples[half:]),
        "peak_processes": max((s[1] for s in samples), default=0), "samples": len(samples),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    print(f"{rows:,} molecules ({failed:,} failed) in {seconds:,.0f} s: "
          f"{result['molecules_per_second']:,} molecules/s on {args.jobs} jobs; peak memory "
          f"(command + workers) {result['peak_tree_pss_mib']:,} MiB PSS "
          f"({result['peak_tree_rss_mib']:,} MiB RSS summed)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
