"""chemprop and molpipe on the same machine, the same day: seconds per epoch, molecules/s, RMSE.

    python benchmarks/bench_chemprop.py --chemprop /path/to/venv/bin/chemprop [--data esol]
        [--seeds 0 1 2] [--epochs 50 --short-epochs 5] [--molpipe-args "--rounds 3"]

chemprop is not a molpipe dependency and nothing of it enters the repo: install it in a venv
of its own (``python -m venv cp && cp/bin/pip install torch==2.13.0 chemprop``) and pass its
executable. ``--data`` is one of the sets the issue quotes chemprop on: ESOL, Lipophilicity,
or the QM9 subset (its first 10,000 molecules, the HOMO-LUMO gap — as in
``bench_accuracy.py``). Both tools read the same CSV (SMILES and the one target). For each
seed, each tool trains it (random 0.8/0.1/0.1 split of that seed, its own defaults otherwise:
chemprop's D-MPNN, molpipe's async schedule) as its command line does, once for ``--epochs``
and once for ``--short-epochs``, the tools taking turns. The difference of the two wall times
over the difference of epochs is a tool's seconds per epoch (training and validation;
start-up, featurization and the final test pass cancel out), and the training split's
molecules over it its molecules/s. Test RMSE and MAE are of the long runs, each on its own
tool's split (the seeds' splits differ between the tools).

Time to chemprop's test error: molpipe's long run also scores its test split after every
epoch (``train --test-every-epoch``: a measurement, never selected on; those passes' time is
taken out of every molpipe figure). ``molpipe_seconds_to_chemprop_test`` is molpipe's wall
seconds from the start of its process until its test RMSE is first at or below chemprop's
final test RMSE (null if never): the process's start-up before train's clock (report.json's
``started_unix`` less the launch time) plus the epoch's ``wall_seconds`` of metrics.csv
(featurizing, training and validation so far) less the test passes so far;
``ratio_to_chemprop_wall`` is that over chemprop's full-run wall seconds. molpipe's long run
reads the graph store its short run featurized (molpipe caches a featurized file; chemprop
featurizes on every run): featurizing is not in that figure. chemprop needs more epochs than
its 2 warm-up epochs: ``--short-epochs`` of at least 3.
Results: ``benchmarks/results/chemprop-DATA.json`` and a table on stdout.
"""

from __future__ import annotations

import argparse
import csv
import json
import shlex
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

from molpipe.data.registry import get_dataset

from bench_accuracy import SETS as ACCURACY_SETS     # benchmarks/ is the script's directory

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
SETS = ("esol", "lipo", "qm9")      # the sets the issue quotes chemprop on


def _subset(name: str) -> tuple[Path, str, str, int | None]:
    """(file, SMILES column, target, first rows used): the bundled set as bench_accuracy.py trains it."""
    entry = get_dataset(name)
    s = ACCURACY_SETS["qm9-gap" if name == "qm9" else name]
    return entry.path, entry.smiles_column, (s.targets or entry.targets)[0], s.limit


def _timed(cmd: list[str]) -> float:
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True)
    if done.returncode != 0:
        raise SystemExit(f"{' '.join(cmd[:3])} failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def write_set(name: str, path: Path) -> Path:
    """The set's SMILES and target (its first rows only, where the issue's figure used them)."""
    file, smiles, target, limit = _subset(name)
    with open(file, newline="") as f:
        rows = [(r[smiles], r[target]) for r in csv.DictReader(f)][:limit]
    with open(path, "w", newline="") as f:
        csv.writer(f).writerows([("smiles", target), *rows])
    return path


def _errors(err: np.ndarray) -> dict:
    return {"test_rmse": float(np.sqrt(np.mean(err ** 2))), "test_mae": float(np.mean(np.abs(err)))}


def chemprop(exe: str, data: Path, target: str, seed: int, epochs: int, out: Path) -> dict:
    wall = _timed([exe, "train", "-i", str(data), "-s", "smiles", "--target-columns", target,
                   "-t", "regression", "--epochs", str(epochs), "--split-sizes", "0.8", "0.1", "0.1",
                   "--data-seed", str(seed), "--pytorch-seed", str(seed), "-n", "0",
                   "--accelerator", "cpu", "-o", str(out)])
    truth = {r["smiles"]: float(r[target]) for r in csv.DictReader(open(data))}
    pred = list(csv.DictReader(open(out / "model_0" / "test_predictions.csv")))
    err = np.array([float(r[target]) - truth[r["smiles"]] for r in pred])
    splits = json.loads((out / "splits.json").read_text())[0]
    return {"wall_seconds": wall, **_errors(err), "n_train": len(splits["train"])}


def molpipe(data: Path, target: str, seed: int, epochs: int, out: Path, extra: list[str],
            every_epoch: bool = False) -> dict:
    """One ``molpipe train`` run; with ``every_epoch`` also its test RMSE after every epoch
    (``curve``: [seconds from the process's start, test RMSE]), the test passes' time taken
    out of ``wall_seconds`` and the curve's seconds."""
    launched = time.time()
    wall = _timed([sys.executable, str(ROOT / "cli.py"), "train", str(data), "--target", target,
                   "--seed", str(seed), "--epochs", str(epochs), "--patience", str(epochs),
                   "--out", str(out), "--quiet", *(["--test-every-epoch"] if every_epoch else []),
                   *extra])
    report = json.loads((out / "report.json").read_text())
    ((name, m),) = report["test"].items()
    row = {"wall_seconds": wall, "test_rmse": m["rmse"], "test_mae": m["mae"],
           "n_train": report["split_sizes"]["train"],
           "train_molecules_per_second": report["train_molecules_per_second"]}
    if every_epoch:
        with open(out / "metrics.csv", newline="") as f:
            epochs_done = list(csv.DictReader(f))
        # the process's start-up (imports) before train's clock started
        startup = max(report["started_unix"] - launched, 0.0)
        row["curve"] = [[startup + float(r["wall_seconds"]) - float(r["test_seconds"]),
                         float(r[f"test_{name}_rmse"])] for r in epochs_done]
        row["test_pass_seconds"] = float(epochs_done[-1]["test_seconds"])
        row["wall_seconds"] = wall - row["test_pass_seconds"]
    return row


def seconds_to(curve: list, error: float) -> float | None:
    """The seconds of the first point of ``curve`` ([seconds, error]) at or below ``error``."""
    return next((t for t, e in curve if e <= error), None)


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chemprop", required=True, help="chemprop executable (its own venv)")
    ap.add_argument("--data", choices=SETS, default="esol")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0])
    ap.add_argument("--epochs", type=int, default=50)
    ap.add_argument("--short-epochs", type=int, default=5)
    ap.add_argument("--molpipe-args", default="", help="more `molpipe train` options, e.g. \"--rounds 3\"")
    args = ap.parse_args()
    target = _subset(args.data)[2]
    extra = shlex.split(args.molpipe_args)
    runs = []
    print("| seed | chemprop wall s | s/epoch | mol/s | test RMSE | MAE | molpipe (async) wall s | s/epoch "
          "| mol/s | test RMSE | MAE | molpipe / chemprop mol/s | molpipe s to chemprop's test RMSE "
          "(/ chemprop wall) |\n| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- | --- "
          "| --- | --- |")
    with tempfile.TemporaryDirectory() as tmp:
        csv_path = write_set(args.data, Path(tmp) / f"{args.data}.csv")
        for seed in args.seeds:
            row = {"seed": seed}
            for n in (args.short_epochs, args.epochs):
                row[f"chemprop_{n}"] = chemprop(args.chemprop, csv_path, target, seed, n,
                                                Path(tmp) / f"c{seed}-{n}")
                row[f"molpipe_{n}"] = molpipe(csv_path, target, seed, n, Path(tmp) / f"m{seed}-{n}",
                                              extra, every_epoch=n == args.epochs)
            for tool in ("chemprop", "molpipe"):
                long, short = row[f"{tool}_{args.epochs}"], row[f"{tool}_{args.short_epochs}"]
                per_epoch = (long["wall_seconds"] - short["wall_seconds"]) / (args.epochs - args.short_epochs)
                row[tool] = {"seconds_per_epoch": per_epoch, "molecules_per_second": long["n_train"] / per_epoch,
                             "wall_seconds": long["wall_seconds"], "test_rmse": long["test_rmse"],
                             "test_mae": long["test_mae"]}
            row["molpipe_over_chemprop"] = row["molpipe"]["molecules_per_second"] / row["chemprop"]["molecules_per_second"]
            reach = seconds_to(row[f"molpipe_{args.epochs}"]["curve"], row["chemprop"]["test_rmse"])
            row["molpipe_seconds_to_chemprop_test"] = reach
            row["ratio_to_chemprop_wall"] = None if reach is None else reach / row["chemprop"]["wall_seconds"]
            runs.append(row)
            c, m = row["chemprop"], row["molpipe"]
            to = "never" if reach is None else f"{reach:.1f} ({row['ratio_to_chemprop_wall']:.2f})"
            print(f"| {seed} | {c['wall_seconds']:.1f} | {c['seconds_per_epoch']:.2f} | {c['molecules_per_second']:.0f} "
                  f"| {c['test_rmse']:.4g} | {c['test_mae']:.4g} | {m['wall_seconds']:.1f} "
                  f"| {m['seconds_per_epoch']:.2f} | {m['molecules_per_second']:.0f} | {m['test_rmse']:.4g} "
                  f"| {m['test_mae']:.4g} | {row['molpipe_over_chemprop']:.2f} | {to} |",
                  flush=True)
    result = {"data": args.data, "target": target, "molpipe_args": args.molpipe_args,
              "epochs": args.epochs, "short_epochs": args.short_epochs, "runs": runs,
              "chemprop_version": subprocess.run([args.chemprop, "--version"], capture_output=True,
                                                 text=True).stdout.strip()}
    RESULTS.mkdir(parents=True, exist_ok=True)
    name = "-".join([f"chemprop-{args.data}", *(["".join(extra).replace("-", "")] if extra else [])])
    (RESULTS / f"{name}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
