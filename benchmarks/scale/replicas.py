"""``replicas``: data-parallel replicas over MPI (``--backend mpi --layout replicas``), one
replica a rank. Throughput: ``molpipe train qm9`` under ``mpiexec -n R`` for each R (each
rank bound to a core with hydra's ``-bind-to core``; R above the cores oversubscribes them,
said in the output), training molecules/s of every epoch after the first; the ratio to one
replica; the simulator's curve (``molpipe simulate --layout mpi-replicas``) for 1-64 beside
the measured points. Time to accuracy: ``molpipe train esol`` for each R and seed, seconds
of training until the validation RMSE first reaches ``--target`` (each R: the median). The load average is taken before and
after every run.

Run:  nice -n 5 python benchmarks/bench_scale.py replicas [--ranks 1 2 4] [--epochs 3]
      [--rounds 3] [--accuracy-epochs 30] [--target 1.0] [--seeds 0 1 2] [--json out.json]
"""

from __future__ import annotations

import csv
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale.common import ROOT, child_env


def _env() -> dict:
    return {**child_env(), "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1", "COLUMNS": "200"}


def _load() -> list[float]:
    return list(os.getloadavg())


# -- replicas: data-parallel replicas over MPI ---------------------------------------------------


def mpi_train(ranks: int, data: str, out: Path, epochs: int, extra=(), bind: bool = True,
              timeout: float = 3600, seed: int = 0) -> dict:
    """``mpiexec -n ranks molpipe train data --backend mpi --layout replicas``: its metrics
    rows, seconds, the load before and after, how the ranks were bound."""
    exe = shutil.which("mpiexec")
    if exe is None:
        raise SystemExit("mpiexec not found: pip install 'molpipe[mpi]'")
    bound = bind and ranks <= (os.cpu_count() or 1)
    cmd = [exe, *(["-bind-to", "core"] if bound else []), "-n", str(ranks), sys.executable,
           "-m", "cli", "train", data, "--backend", "mpi", "--layout", "replicas",
           "--epochs", str(epochs), "--seed", str(seed), "--out", str(out), "--overwrite", *extra]
    before, t0 = _load(), time.perf_counter()
    proc = subprocess.run(cmd, cwd=ROOT, env=_env(), capture_output=True, text=True,
                          timeout=timeout)
    seconds = time.perf_counter() - t0
    if proc.returncode != 0:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}")
    with open(out / "metrics.csv", newline="") as f:
        rows = [{k: _num(v) for k, v in r.items()} for r in csv.DictReader(f)]
    return {"ranks": ranks, "command": " ".join(cmd[:1] + cmd[1:]), "seconds": seconds,
            "bind": "core" if bound else f"none ({ranks} ranks on {os.cpu_count()} cores: "
                                            "oversubscribed)",
            "load_before": before, "load_after": _load(), "rows": rows}


def _num(v: str):
    try:
        return float(v)
    except ValueError:
        return v


def throughput(ranks, data: str, epochs: int, scratch: Path, every: int,
               rounds: int = 1) -> list[dict]:
    """Training molecules/s of each R: the median over epochs 2.. of a run; with
    ``rounds``, the runs of every R take turns (1, 2, 4, 1, 2, 4, ...) so that a slow spell
    of this shared machine falls on all of them, and each R's figure is its median run."""
    runs = {r: [] for r in ranks}
    for i in range(rounds):
        for r in ranks:
            run = mpi_train(r, data, scratch / f"tp-{data}-{r}", epochs,
                            ("--exchange-every", str(every)))
            speeds = sorted(row["train_molecules_per_second"] for row in run["rows"][1:]) or \
                [run["rows"][0]["train_molecules_per_second"]]
            run["molecules_per_second"] = speeds[len(speeds) // 2]
            run["per_epoch"] = [row["train_molecules_per_second"] for row in run["rows"]]
            del run["rows"]
            runs[r].append(run)
            print(f"  round {i + 1}, {r} replica(s): {run['molecules_per_second']:,.0f} mol/s "
                  f"(load {run['load_before'][0]:.2f} -> {run['load_after'][0]:.2f}, "
                  f"bind {run['bind']})", file=sys.stderr, flush=True)
    out = []
    for r in ranks:
        speeds = sorted(run["molecules_per_second"] for run in runs[r])
        best = {**runs[r][0], "molecules_per_second": speeds[len(speeds) // 2],
                "rounds": [{k: run[k] for k in ("molecules_per_second", "per_epoch",
                                                "load_before", "load_after")}
                           for run in runs[r]]}
        out.append(best)
    one = out[0]["molecules_per_second"]
    for i, run in enumerate(out):
        run["ratio_to_one"] = run["molecules_per_second"] / one
        run["ratio_each_round"] = [a["molecules_per_second"] / b["molecules_per_second"]
                                   for a, b in zip(run["rounds"], out[0]["rounds"])]
    return out


def to_accuracy(ranks, data: str, epochs: int, target: float, scratch: Path,
                every: int, seeds=(0,)) -> list[dict]:
    """Seconds of training until the validation RMSE first reaches ``target``, for each R
    and seed; each R's figure is its median over the seeds (a seed that never reaches the
    target counts as slower than any that does)."""
    out = []
    for r in ranks:
        per_seed = []
        for seed in seeds:
            run = mpi_train(r, data, scratch / f"acc-{data}-{r}", epochs,
                            ("--exchange-every", str(every), "--patience", str(epochs)),
                            seed=seed)
            col = next(k for k in run["rows"][0] if k.startswith("val_") and k.endswith("_rmse"))
            hit = next((row for row in run["rows"] if row[col] <= target), None)
            per_seed.append({
                "seed": seed, "column": col,
                "epoch": None if hit is None else int(hit["epoch"]),
                "train_seconds": None if hit is None else hit["train_seconds"],
                "wall_seconds": None if hit is None else hit["wall_seconds"],
                "best_rmse": min(row[col] for row in run["rows"]),
                "curve": [(int(row["epoch"]), row["train_seconds"], row[col])
                          for row in run["rows"]],
                "load_before": run["load_before"], "load_after": run["load_after"]})
            print(f"  {r} replica(s), seed {seed}: {per_seed[-1]['train_seconds']} s to "
                  f"{col} <= {target} (epoch {per_seed[-1]['epoch']}, best "
                  f"{per_seed[-1]['best_rmse']:.3f})", file=sys.stderr, flush=True)
        times = sorted(float("inf") if s["train_seconds"] is None else s["train_seconds"]
                       for s in per_seed)
        epochs_hit = sorted(float("inf") if s["epoch"] is None else s["epoch"] for s in per_seed)
        median = times[len(times) // 2]
        out.append({"ranks": r, "bind": run["bind"], "target": target,
                    "median_train_seconds": None if median == float("inf") else median,
                    "median_epoch": epochs_hit[len(epochs_hit) // 2],
                    "median_best_rmse": sorted(s["best_rmse"] for s in per_seed)[len(per_seed) // 2],
                    "seeds": per_seed})
    return out


def simulated(data: str, every: int, cores: int) -> dict:
    """``molpipe simulate DATA --layout mpi-replicas --json`` (1-64 replicas)."""
    proc = subprocess.run([sys.executable, "-m", "cli", "simulate", data, "--layout",
                           "mpi-replicas", "--exchange-every", str(every), "--cores", str(cores),
                           "--workers", "1", "--workers", "2", "--workers", "4", "--workers", "8",
                           "--workers", "16", "--workers", "32", "--workers", "64", "--json"],
                          cwd=ROOT, env=_env(), capture_output=True, text=True, timeout=1800)
    if proc.returncode != 0:
        raise SystemExit(f"molpipe simulate failed:\n{proc.stderr[-3000:]}")
    return json.loads(proc.stdout)


def replicas(args) -> dict:
    scratch = Path(args.scratch)
    scratch.mkdir(parents=True, exist_ok=True)
    cores = os.cpu_count() or 1
    report = {"figure": "replicas", "cores": cores, "exchange_every": args.every,
              "started_load": _load()}
    if not args.skip_throughput:
        print(f"throughput, {args.data}:", file=sys.stderr, flush=True)
        report["throughput"] = throughput(args.ranks, args.data, args.epochs, scratch, args.every,
                                          args.rounds)
    if not args.skip_simulate:
        report["simulated"] = simulated(args.data, args.every, cores)
        measured = {m["ranks"]: m["molecules_per_second"] for m in report.get("throughput", [])}
        report["beside"] = [
            {"replicas": r["replicas"], "simulated_own_core": r["molecules_per_second"],
             f"simulated_{cores}_cores": c["molecules_per_second"],
             "measured": measured.get(r["replicas"])}
            for r, c in zip(report["simulated"]["curves"]["own_core"],
                            report["simulated"]["curves"][f"{cores}_cores"])]
    if not args.skip_accuracy:
        print(f"time to accuracy, {args.accuracy_data}:", file=sys.stderr, flush=True)
        report["to_accuracy"] = to_accuracy(args.ranks, args.accuracy_data, args.accuracy_epochs,
                                            args.target, scratch, args.every, args.seeds)
    report["finished_load"] = _load()
    return report


def add(sub) -> None:
    """The ``replicas`` subcommand."""
    p = sub.add_parser("replicas", help="data-parallel replicas over MPI: measured and simulated")
    p.add_argument("--ranks", type=int, nargs="+", default=[1, 2, 4])
    p.add_argument("--data", default="qm9", help="throughput data set (default: the QM9 subset)")
    p.add_argument("--epochs", type=int, default=3)
    p.add_argument("--every", type=int, default=2, help="--exchange-every (molpipe's default: 2)")
    p.add_argument("--rounds", type=int, default=3,
                   help="throughput runs of each R, taking turns (each R: its median)")
    p.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2],
                   help="time-to-accuracy seeds (each R: its median)")
    p.add_argument("--accuracy-data", default="esol")
    p.add_argument("--accuracy-epochs", type=int, default=30)
    p.add_argument("--target", type=float, default=1.0, help="validation RMSE to reach")
    p.add_argument("--scratch", default=str(Path(tempfile.gettempdir()) / "molpipe-scale-mpi"))
    p.add_argument("--skip-throughput", action="store_true")
    p.add_argument("--skip-simulate", action="store_true")
    p.add_argument("--skip-accuracy", action="store_true")
    p.add_argument("--json", type=Path, default=None, help="also write the JSON here")
    p.set_defaults(run=replicas)
