"""Test error against chemprop 2.3.1's on the four bundled sets, mean over split seeds 0, 1, 2.

    python benchmarks/bench_accuracy.py [--schedule reference] [--sets esol freesolv lipo qm9]
        [--seeds 0 1 2] [--hidden 128] [--max-rounds 6] [--molecules-per-instance N]
        [--out benchmarks/results/accuracy-reference.json]

Each run is ``molpipe.train.train`` with the defaults of ``molpipe train`` (random 80/10/10
split, 50 epochs; 30 for Lipophilicity and the QM9 subset, whose first 10,000 molecules are
used with the ``gap`` target as in the chemprop figure). The chemprop figures were measured
with its defaults on this 2-core machine and are quoted from the project's issue tracker.
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from molpipe.train import TrainConfig, train

# data set -> (train() settings, chemprop test RMSE, chemprop MAE or None, chemprop training mol/s)
SETS = {
    "esol": (dict(epochs=50), 0.664, 0.518, 586),
    "freesolv": (dict(epochs=50), 1.378, None, 987),
    "lipo": (dict(epochs=30), 0.635, None, 272),
    "qm9": (dict(epochs=30, targets=["gap"], limit=10_000), None, 0.00804, 825),
}


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--schedule", default="reference")
    ap.add_argument("--sets", nargs="+", default=list(SETS))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--hidden", type=int, default=128)
    ap.add_argument("--max-rounds", type=int, default=6, help="cap on a molecule's propagation rounds")
    ap.add_argument("--molecules-per-instance", type=int, default=None,
                    help="default: as molpipe train chooses")
    ap.add_argument("--out", type=Path, default=None)
    args = ap.parse_args()
    out = args.out or Path(f"benchmarks/results/accuracy-{args.schedule}.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    results = json.loads(out.read_text()) if out.exists() else {}
    for name in args.sets:
        settings, cp_rmse, cp_mae, cp_rate = SETS[name]
        runs = []
        for seed in args.seeds:
            with tempfile.TemporaryDirectory() as tmp:
                t0 = time.perf_counter()
                rep = train(TrainConfig(data=name, seed=seed, schedule=args.schedule,
                                        hidden=args.hidden, max_rounds=args.max_rounds,
                                        molecules_per_instance=args.molecules_per_instance,
                                        **settings), tmp)
            (target, m), = rep["test"].items()
            runs.append({"seed": seed, "rmse": m["rmse"], "mae": m["mae"], "r2": m["r2"],
                         "wall_seconds": time.perf_counter() - t0, "epochs": rep["epochs"],
                         "molecules_per_instance": rep["molecules_per_instance"],
                         "train_molecules_per_second": rep["train_molecules_per_second"]})
            print(f"{name} seed {seed}: test RMSE {m['rmse']:.4f} MAE {m['mae']:.5f} "
                  f"({runs[-1]['wall_seconds']:.0f} s, {runs[-1]['train_molecules_per_second']:.0f} mol/s)",
                  flush=True)
        mean = {k: float(np.mean([r[k] for r in runs])) for k in ("rmse", "mae", "r2", "wall_seconds",
                                                                  "train_molecules_per_second")}
        results[name] = {"target": target, "schedule": args.schedule, "hidden": args.hidden,
                         "max_rounds": args.max_rounds,
                         "settings": settings, "runs": runs, "mean": mean,
                         "chemprop": {"rmse": cp_rmse, "mae": cp_mae, "train_molecules_per_second": cp_rate}}
        out.write_text(json.dumps(results, indent=2))
    print(f"\n| data set | target | molpipe {args.schedule} test RMSE (MAE) | chemprop | wall s/run | mol/s |")
    print("| --- | --- | --- | --- | --- | --- |")
    for name, r in results.items():
        cp = r["chemprop"]
        cp_txt = f"{cp['rmse']}" if cp["rmse"] else f"MAE {cp['mae']}"
        print(f"| {name} | {r['target']} | {r['mean']['rmse']:.4f} ({r['mean']['mae']:.5f}) | {cp_txt} | "
              f"{r['mean']['wall_seconds']:.0f} | {r['mean']['train_molecules_per_second']:.0f} |")


if __name__ == "__main__":
    main()
