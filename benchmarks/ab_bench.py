"""`molpipe bench` of two commits in one sitting, their runs taking turns.

    python benchmarks/ab_bench.py e750cdf HEAD --rounds 3 --data esol --out results/ab.json

Each commit is checked out into a temporary git worktree (the working tree's own files when
the commit is ``WORKTREE``) and ``python cli.py bench DATA --json`` runs there, before and
after alternating round by round, so that a slow spell of a shared machine falls on both
alike. Each side has its own store cache and numba cache. Printed: molecules/s per schedule
and round, the median per side, and per round the ratio of each schedule to the same run's
reference (a ratio within one run is what a noisy machine can compare).
"""

from __future__ import annotations

import argparse
import json
import os
import statistics
import subprocess
import sys
import tempfile
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]


def checkout(commit: str, where: Path) -> Path:
    if commit == "WORKTREE":
        return REPO
    subprocess.run(["git", "-C", str(REPO), "worktree", "add", "--detach", "-q", str(where),
                    commit], check=True)
    return where


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("before")
    ap.add_argument("after")
    ap.add_argument("--data", default="esol")
    ap.add_argument("--rounds", type=int, default=3)
    ap.add_argument("--bench-args", default="", help="more molpipe bench options, one string")
    ap.add_argument("--out", type=Path, help="write every run's results here (JSON)")
    args = ap.parse_args(argv)

    tmp = Path(tempfile.mkdtemp(prefix="molpipe-ab-"))
    sides = {"before": args.before, "after": args.after}
    dirs = {side: checkout(commit, tmp / side) for side, commit in sides.items()}
    runs: dict[str, list[dict]] = {side: [] for side in sides}
    try:
        for r in range(args.rounds):
            for side in (sides if r % 2 == 0 else list(sides)[::-1]):
                env = dict(os.environ, MOLPIPE_CACHE=str(tmp / f"cache-{side}"),
                           NUMBA_CACHE_DIR=str(tmp / f"numba-{side}"))
                cmd = [sys.executable, "cli.py", "bench", args.data, "--json",
                       *args.bench_args.split()]
                out = subprocess.run(cmd, cwd=dirs[side], env=env, capture_output=True,
                                     text=True, check=True)
                result = json.loads(out.stdout)
                runs[side].append(result)
                rates = {k: round(v["molecules_per_second"]) for k, v in result.items()
                         if k != "settings"}
                print(f"round {r + 1} {side:6s} {rates}", flush=True)
    finally:
        for side, commit in sides.items():
            if commit != "WORKTREE":
                subprocess.run(["git", "-C", str(REPO), "worktree", "remove", "--force",
                                str(dirs[side])], check=False)
    summary = {}
    for side, results in runs.items():
        names = [k for k in results[0] if k != "settings"]
        summary[side] = {
            name: {"molecules_per_second": [r[name]["molecules_per_second"] for r in results],
                   "median": statistics.median(r[name]["molecules_per_second"] for r in results),
                   "per_reference": [r[name]["molecules_per_second"]
                                     / r["reference"]["molecules_per_second"] for r in results]
                   if "reference" in names else None}
            for name in names}
    for name in summary["after"]:
        b, a = summary["before"].get(name), summary["after"][name]
        if b:
            print(f"{name:13s} median {b['median']:7.0f} -> {a['median']:7.0f} molecules/s "
                  f"(after / before {a['median'] / b['median']:.2f})")
    if args.out:
        args.out.write_text(json.dumps({"before": sides["before"], "after": sides["after"],
                                        "data": args.data, "summary": summary,
                                        "runs": runs}, indent=2) + "\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
