"""Kill a training process with SIGKILL at random moments, resume, and compare to an uninterrupted run.

    python -m benchmarks.bench_kill_resume [--runs 20] [--schedule reference] [--seed 0]

Every trial trains freesolv (hidden 16, 5 epochs) in a subprocess with slowed checkpoint
and model writes (so kills land inside them too), kills it after a uniform random delay,
inspects the run directory (the newest valid checkpoint loads; model/ loads or is absent),
resumes it in another subprocess (``molpipe train --resume`` semantics; starting over when
no checkpoint exists yet), and compares the final parameters and the per-epoch rows
digests and data order with an uninterrupted run. Writes benchmarks/results/kill_resume.json.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

import numpy as np

from molpipe.io.checkpoint import load_checkpoint
from molpipe.measure.faults import CorruptRun, inspect_run_dir, train_code
from molpipe.io.model import load_model

ROOT = Path(__file__).resolve().parents[1]
SLOW = {"MOLPIPE_TEST_SLOW_CHECKPOINT": "0.15", "MOLPIPE_TEST_SLOW_MODEL": "0.15"}


def run(code: str, env: dict, timeout: float = 300.0) -> float:
    t0 = time.perf_counter()
    subprocess.run([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                   check=True, timeout=timeout, stdout=subprocess.DEVNULL)
    return time.perf_counter() - t0


def killed(code: str, delay: float, env: dict) -> bool:
    """Run ``code``, SIGKILL it after ``delay`` seconds; False when it finished first."""
    proc = subprocess.Popen([sys.executable, "-c", code], cwd=ROOT, env={**os.environ, **env},
                            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    try:
        proc.wait(timeout=delay)
        return False
    except subprocess.TimeoutExpired:
        proc.send_signal(signal.SIGKILL)
        proc.wait(timeout=30)
        return True


def summary(out: Path) -> tuple[dict, list]:
    params = load_model(out)[0].state_dict()
    history = load_checkpoint(out)[0]["history"]
    return params, [(h["rows_seen"], h["rows_digest"], h["data_order"]) for h in history]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--runs", type=int, default=20)
    ap.add_argument("--schedule", default="reference")
    ap.add_argument("--epochs", type=int, default=5)
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--out", default=str(ROOT / "benchmarks/results/kill_resume.json"))
    args = ap.parse_args()
    config = dict(data="freesolv", epochs=args.epochs, hidden=16, molecules_per_instance=32,
                  patience=50, schedule=args.schedule, trace=False,
                  **({"max_active_keys": 4} if args.schedule == "sync" else {}))
    rng = np.random.default_rng(args.seed)
    work = Path(tempfile.mkdtemp(prefix="molpipe-kill-"))
    try:
        whole = work / "whole"
        t_whole = run(train_code(str(whole), **config), SLOW)
        ref_params, ref_rows = summary(whole)
        n_train = ref_rows[0][0]
        trials = []
        for i in range(args.runs):
            out = work / f"run-{i}"
            delay = float(rng.uniform(0.3, 0.9 * t_whole))
            was_killed = killed(train_code(str(out), **config), delay, SLOW)
            trial = {"delay_s": round(delay, 3), "killed": was_killed}
            try:
                state = inspect_run_dir(out)
            except CorruptRun as e:
                trial.update(outcome="CORRUPT", error=str(e))
                trials.append(trial)
                print(i, trial, flush=True)
                continue
            trial.update(phase=state["phase"], checkpoint_epoch=state["checkpoint"],
                         model=state["model"], leftovers=state["leftovers"])
            if state["phase"] != "finished":
                if state["checkpoint"] is None:    # killed before the first checkpoint
                    shutil.rmtree(out, ignore_errors=True)
                    run(train_code(str(out), **config), {})
                    trial["resumed"] = "restarted (no checkpoint yet)"
                else:
                    run(train_code(str(out), resume=True), {})
                    trial["resumed"] = f"from epoch {state['checkpoint']}"
            params, rows = summary(out)
            same = all(np.array_equal(params[k], ref_params[k]) for k in ref_params)
            rows_ok = all(r[0] == n_train for r in rows) and rows == ref_rows
            trial.update(identical_parameters=same, rows_once_each_same_order=rows_ok,
                         outcome="ok" if same and rows_ok else "MISMATCH")
            trials.append(trial)
            print(i, trial, flush=True)
            shutil.rmtree(out, ignore_errors=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "command": "python -m benchmarks.bench_kill_resume " + " ".join(sys.argv[1:]),
        "config": config, "uninterrupted_seconds": round(t_whole, 2), "runs": len(trials),
        "outcomes": dict(Counter(t["outcome"] for t in trials)),
        "phases": dict(Counter(t.get("phase", "?") for t in trials)),
        "all_ok": all(t["outcome"] == "ok" for t in trials),
        "trials": trials,
    }
    Path(args.out).parent.mkdir(parents=True, exist_ok=True)
    Path(args.out).write_text(json.dumps(result, indent=2))
    print(json.dumps({k: v for k, v in result.items() if k != "trials"}, indent=2))


if __name__ == "__main__":
    main()
