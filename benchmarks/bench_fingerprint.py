"""molpipe fingerprint over a big file: molecules/s and peak memory of the command and its workers.

Runs ``python cli.py fingerprint --model RUN -i FILE -o OUT.npy`` in a fresh process while
this one samples the memory (RSS and PSS, from /proc) of its whole process tree every
0.5 s (``bench_big_file.run_and_sample``); then checks that the ``.npy`` loads with one row
per input row. With ``--max-seconds`` the command is stopped after that long and the rows it
wrote so far are counted from its partial output (the figures then cover those rows).

Run: nice -n 10 python benchmarks/bench_fingerprint.py --model /tmp/fp-model \
         --input ../shared/data/moses_train.csv.gz [--limit 100000] [--jobs 2] \
         [--max-seconds 2700] [--json benchmarks/results/fingerprint-moses.json]
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

from benchmarks.scale.common import _memory_kib, _tree  # noqa: E402

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


def run_and_sample(cmd: list[str], every: float, max_seconds: float = 0,
                   on_stop=lambda: None) -> tuple[list, tuple | None]:
    """Run ``cmd``, sampling (seconds, n_processes, RSS sum, PSS sum, parent RSS) of its
    process tree. After ``max_seconds`` (0: never) ``on_stop()`` is called and the tree is
    killed (its partial output is in our temporary directory).

    Returns
    -------
    samples, and None if the command finished by itself, else (seconds, on_stop's value).
    """
    import signal
    import subprocess

    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd)
    samples, stop = [], None
    while proc.poll() is None:
        tree = _tree(proc.pid)
        mem = [_memory_kib(p) for p in tree]
        samples.append((time.perf_counter() - t0, len(tree), sum(m[0] for m in mem),
                        sum(m[1] for m in mem), mem[0][0]))
        if max_seconds and time.perf_counter() - t0 > max_seconds:
            stop = (time.perf_counter() - t0, on_stop())
            for pid in tree:          # SIGINT is ignored under nohup ... &; its output is ours
                try:
                    os.kill(pid, signal.SIGKILL)
                except ProcessLookupError:
                    pass
            proc.wait()
            break
        time.sleep(every)
    if proc.returncode and stop is None:
        raise SystemExit(f"fingerprint failed ({proc.returncode})")
    return samples, stop


def partial_rows(work: Path, width: int) -> int:
    """Rows in the temporary .npy the running command is writing (128-byte header, float32
    rows; rows still in its write buffer are not counted)."""
    tmp = sorted(work.glob(".fp.npy.tmp-*"))
    return (tmp[0].stat().st_size - 128) // (4 * width) if tmp else 0


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--model", type=Path, required=True)
    parser.add_argument("--input", type=Path, required=True)
    parser.add_argument("--limit", type=int, default=0, help="Only the first rows (0: all).")
    parser.add_argument("--jobs", type=int, default=2)
    parser.add_argument("--layer", default="pooled")
    parser.add_argument("--max-seconds", type=float, default=0,
                        help="Stop the command after this long and count its rows so far.")
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
        width = 0
        if args.max_seconds:
            from molpipe.inference.fingerprint import width as fp_width
            from molpipe.inference.predict import Predictor

            width = fp_width(Predictor.load(args.model), args.layer)
        t0 = time.perf_counter()
        samples, stop = run_and_sample(cmd, 0.5, args.max_seconds,
                                       lambda: partial_rows(work, width))
        seconds = time.perf_counter() - t0
        finished = stop is None
        if finished:
            F = np.load(out, mmap_mode="r")
            rows, width = F.shape
            failed = int(np.isnan(F[:, 0]).sum())
            out_mib = out.stat().st_size / MIB
        else:
            seconds, rows = stop
            failed, out_mib = None, rows * width * 4 / MIB
    finally:
        shutil.rmtree(work, ignore_errors=True)
    peak = lambda k: round(max((s[k] for s in samples), default=0) / 1024, 1)
    half = len(samples) // 2
    pss_half = lambda part: round(max((s[3] for s in part), default=0) / 1024, 1)
    result = {
        "command": "python cli.py fingerprint --model MODEL -i INPUT -o fp.npy "
                   f"--jobs {args.jobs} --layer {args.layer}",
        "model": str(args.model), "input": str(args.input), "limit": args.limit,
        "finished": finished, "rows": rows, "failed": failed, "width": width, "npy_mib": round(out_mib),
        "seconds": round(seconds, 1), "molecules_per_second": round(rows / seconds),
        "peak_tree_rss_mib": peak(2), "peak_tree_pss_mib": peak(3),
        "peak_parent_rss_mib": peak(4),
        "peak_tree_pss_first_half_mib": pss_half(samples[:half]),
        "peak_tree_pss_second_half_mib": pss_half(samples[half:]),
        "peak_processes": max((s[1] for s in samples), default=0), "samples": len(samples),
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }
    print(json.dumps(result, indent=2))
    what = f"({failed:,} failed)" if finished else "(stopped: the rows written so far)"
    print(f"{rows:,} molecules {what} in {seconds:,.0f} s: "
          f"{result['molecules_per_second']:,} molecules/s on {args.jobs} jobs; peak memory "
          f"(command + workers) {result['peak_tree_pss_mib']:,} MiB PSS "
          f"({result['peak_tree_rss_mib']:,} MiB RSS summed)")
    if args.json:
        args.json.write_text(json.dumps(result, indent=2) + "\n")


if __name__ == "__main__":
    main()
