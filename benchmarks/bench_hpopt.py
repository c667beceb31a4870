"""``molpipe hpopt esol --trials 30``: its wall time, and its best config's test error against
the defaults' on the same split.

    python -m benchmarks.bench_hpopt [--data esol] [--trials 30] [--seed 0] [--repeats 2]

Runs the command itself in a subprocess (timed: compile, featurizing and every trial
included), then trains the best trial's ``best_config.toml`` and the defaults (``molpipe
train DATA --seed SEED``, the same split) ``--repeats`` times each — the async schedule's
thread timing makes two runs of one config differ — and compares their test errors (the
trials never see the test split). Writes benchmarks/results/hpopt-<data>.json with the load
average before and after: the machine is shared, so the wall time is as measured then.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]


def command(args: list[str], timeout: float) -> float:
    """Run ``python cli.py ARGS`` from the repository; its wall seconds."""
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "cli.py", *args], cwd=ROOT, check=True, timeout=timeout,
                   env={**os.environ, "PYTHONPATH": str(ROOT)}, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def test_error(run_dir: Path) -> tuple[float, dict]:
    """(test RMSE, or 1 - ROC-AUC, of a run; its test summary)."""
    report = json.loads((run_dir / "report.json").read_text(encoding="utf-8"))
    s = report["test_summary"]
    return (s["rmse"] if report["task"] == "regression" else 1.0 - s["auc"]), s


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="esol")
    ap.add_argument("--trials", type=int, default=30)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--repeats", type=int, default=2, help="trainings of each config")
    ap.add_argument("--work", type=Path, default=ROOT / "runs" / "bench-hpopt")
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or ROOT / "benchmarks" / "results" / f"hpopt-{a.data}.json"
    shutil.rmtree(a.work, ignore_errors=True)
    search = a.work / "search"
    load_before = os.getloadavg()
    argv = ["hpopt", a.data, "--trials", str(a.trials), "--seed", str(a.seed), "--out",
            str(search), "--quiet"]
    wall = command(argv, timeout=4 * 3600)
    load_after = os.getloadavg()
    summary = json.loads((search / "hpopt.json").read_text(encoding="utf-8"))
    print(f"molpipe {' '.join(argv)}: {wall:.0f} s, {summary['states']}", flush=True)

    runs: dict[str, list] = {"best": [], "defaults": []}
    for i in range(a.repeats):           # the two take turns: the machine's load shared alike
        for name, args in (("best", ["--config", str(search / "best_config.toml")]),
                           ("defaults", [a.data, "--seed", str(a.seed)])):
            run_dir = a.work / f"{name}-{i}"
            seconds = command(["train", *args, "--out", str(run_dir), "--quiet", "--overwrite"],
                              timeout=3600)
            err, s = test_error(run_dir)
            runs[name].append({"run_dir": str(run_dir), "test_error": err,
                               "test_summary": s, "wall_seconds": round(seconds, 1)})
            print(f"{name} {i}: test error {err:.4f} ({seconds:.0f} s)", flush=True)
    best_trial = summary["best"]
    trial_err = test_error(Path(best_trial["run_dir"]))[0] if best_trial else None
    base = summary.get("base_trial")
    base_err = test_error(Path(base["run_dir"]))[0] if base and base.get("run_dir") and \
        Path(base["run_dir"], "report.json").exists() else None
    mean = {k: float(np.mean([r["test_error"] for r in v])) for k, v in runs.items()}
    result = {
        "command": f"molpipe {' '.join(argv[:-3])}",
        "bench": f"python -m benchmarks.bench_hpopt --data {a.data} --trials {a.trials} "
                 f"--seed {a.seed} --repeats {a.repeats}",
        "wall_seconds": round(wall, 1), "goal_wall_seconds": 900,
        "load_average_before": load_before, "load_average_after": load_after,
        "machine": f"{os.cpu_count()} cores, shared with other work at the time",
        "trials": summary["trials"], "states": summary["states"],
        "metric": summary["metric"], "space": summary["space"],
        "best_trial": best_trial, "best_trial_test_error": trial_err,
        "base_trial_test_error": base_err,
        "best_config": runs["best"], "defaults": runs["defaults"],
        "test_error_mean": mean,
        "best_over_defaults": mean["best"] / mean["defaults"],
        "no_worse": mean["best"] <= mean["defaults"],
    }
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2), encoding="utf-8")
    print(f"wall {wall:.0f} s (goal <= 900) · test error best config {mean['best']:.4f}, "
          f"defaults {mean['defaults']:.4f} ({result['best_over_defaults']:.3f}×) · {out}")


if __name__ == "__main__":
    main()
