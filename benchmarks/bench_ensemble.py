"""Ensembles: wall time of K members against one model, their test error against the
members' mean, and how far σ can be trusted (before and after recalibration).

    python benchmarks/bench_ensemble.py [--sets esol lipo qm9-gap] [--members 5]
        [--jobs 1 2] [--member-schedule async] [--seed 0] [--epochs N]

For each set (as ``bench_accuracy.py`` trains it: its targets, first rows and epochs) this
trains, in one sitting on the same split, one model (``molpipe train``'s defaults) and then
an ensemble of ``--members`` for each ``--jobs`` value (members trained at once, each its own
pipeline; 1 is one after another), recalibrated on the validation split. It reports wall
seconds and their ratio to the one model, the ensemble's and the members' mean test error,
and σ's Spearman ρ(|error|, σ) and share of test errors inside the 68 % and 95 % intervals,
raw and recalibrated. Results: ``benchmarks/results/ensemble.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import tempfile
import time
from pathlib import Path

import numpy as np

from molpipe.inference.ensemble import assemble
from molpipe.training.calibration import calibration_table
from molpipe.training.ensemble import train_members
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train

from bench_accuracy import SETS                       # benchmarks/ is the script's directory

RESULTS = Path(__file__).resolve().parents[1] / "benchmarks" / "results"


def settings(name: str, seed: int, epochs: int | None) -> TrainConfig:
    s = SETS[name]
    return TrainConfig(data=s.data, targets=list(s.targets) if s.targets else None,
                       limit=s.limit, epochs=epochs or s.epochs, seed=seed)


def raw_calibration(root: Path, report: dict) -> dict:
    """The test split's calibration with σ before recalibration (σ / std_scale)."""
    import csv

    targets = report["targets"]
    rows = list(csv.DictReader(open(root / "test_predictions.csv", newline="")))
    col = lambda c: np.array([float(r[c]) if r[c] else np.nan for r in rows])  # noqa: E731
    Y = np.column_stack([col(t) for t in targets])
    P = np.column_stack([col(f"pred_{t}") for t in targets])
    S = np.column_stack([col(f"{t}_std") for t in targets])
    scale = np.asarray(report["ensemble"]["std_scale"] or np.ones(len(targets)))
    return calibration_table(targets, Y, P, S / scale)


def mean_over_targets(table: dict, key: str) -> float:
    return float(np.nanmean([m[key] for m in table.values()]))


def one_set(name: str, members: int, jobs_list, schedule: str, seed: int, epochs, work: Path):
    base = settings(name, seed, epochs)
    metric = SETS[name].metric
    t0 = time.perf_counter()
    single = train(base, work / f"{name}-one")
    one_seconds = time.perf_counter() - t0
    out = {"set": name, "metric": metric, "epochs": base.epochs, "members": members,
           "one_model": {"seconds": one_seconds, "test": single["test_summary"][metric]},
           "ensembles": []}
    for jobs in jobs_list:
        config = dataclasses.replace(base, ensemble=members, ensemble_jobs=jobs,
                                     recalibrate=True, schedule=schedule)
        root = work / f"{name}-ens-{jobs}"
        t0 = time.perf_counter()
        done = train_members(config, root)
        report = assemble(root, config, done["seconds"], done["jobs"])
        seconds = time.perf_counter() - t0
        raw, cal = raw_calibration(root, report), report["calibration"]["test"]
        out["ensembles"].append({
            "jobs": jobs, "member_schedule": schedule, "seconds": seconds,
            "ratio_to_one_model": seconds / one_seconds,
            "test": report["test_summary"][metric],
            "members_mean_test": report["ensemble"]["member_mean_test_summary"][metric],
            "members_test": [m[metric] for m in report["ensemble"]["member_test_summary"]],
            "std_scale": report["ensemble"]["std_scale"],
            "spearman": mean_over_targets(cal, "spearman"),
            "raw": {k: mean_over_targets(raw, k) for k in ("within_68", "within_95",
                                                            "miscalibration_area")},
            "recalibrated": {k: mean_over_targets(cal, k) for k in ("within_68", "within_95",
                                                                     "miscalibration_area")}})
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--sets", nargs="+", default=["esol", "lipo", "qm9-gap"], choices=list(SETS))
    ap.add_argument("--members", type=int, default=5)
    ap.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    ap.add_argument("--member-schedule", default="async", choices=("async", "sync", "reference"))
    ap.add_argument("--seed", type=int, default=0)
    ap.add_argument("--epochs", type=int, default=None, help="default: the set's own")
    ap.add_argument("--out", type=Path, default=RESULTS / "ensemble.json")
    args = ap.parse_args()
    results = []
    with tempfile.TemporaryDirectory() as tmp:
        for name in args.sets:
            results.append(one_set(name, args.members, args.jobs, args.member_schedule,
                                   args.seed, args.epochs, Path(tmp)))
            r = results[-1]
            print(f"{name} ({r['metric']}, {r['epochs']} epochs): one model "
                  f"{r['one_model']['test']:.4f} in {r['one_model']['seconds']:.0f} s")
            for e in r["ensembles"]:
                print(f"  {args.members} members, {e['jobs']} at a time: {e['seconds']:.0f} s "
                      f"= {e['ratio_to_one_model']:.2f} x one · test {e['test']:.4f} vs members' "
                      f"mean {e['members_mean_test']:.4f} · rho {e['spearman']:.2f} · in 95 %: "
                      f"raw {100 * e['raw']['within_95']:.1f} %, recalibrated "
                      f"{100 * e['recalibrated']['within_95']:.1f} %", flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps({"command": "python benchmarks/bench_ensemble.py "
                                               + " ".join(f"--{k.replace('_', '-')} " + (
                                        " ".join(map(str, v)) if isinstance(v, list) else str(v))
                                        for k, v in vars(args).items()
                                        if k != "out" and v is not None),
                                    "results": results}, indent=2, default=float) + "\n")
    print(f"results: {args.out}")


if __name__ == "__main__":
    main()
