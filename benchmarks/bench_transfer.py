"""Transfer: fine-tuning a QM9 model on a small set against training from scratch.

    python benchmarks/bench_transfer.py [--source-limit 4000] [--source-epochs 20]
        [--small 300] [--epochs 60] [--seeds 0 1 2] [--hidden 64] [--out FILE]

A source model is trained on the first ``--source-limit`` molecules of the QM9 subset
(targets mu, alpha, homo, lumo). Then on two small sets of ``--small`` molecules:

- ``qm9-cv``: QM9 rows the source never saw (from row 8001 on), target cv (heat capacity),
  a target the source was not trained on;
- ``esol``: the first ``--small`` molecules of ESOL (another data set: larger, drug-like
  molecules, aqueous solubility);

each is trained three ways on the same split (50 / 10 / 40 %: few to train on, a test split
big enough to compare), per split seed: from scratch, fine-tuned from the source model
(``--from-model``: every stage copied, a new readout head), and fine-tuned with the
embedding and the rounds frozen (``--freeze embed,message,update``). Test error (MAE for cv,
RMSE for ESOL) and wall seconds of each run go to ``--out`` (default
``benchmarks/results/transfer.json``) and are printed as a Markdown table (mean ± SD over
seeds). Everything runs in this process, one run after another.
"""

from __future__ import annotations

import argparse
import csv
import json
import platform
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))
RESULTS = ROOT / "benchmarks" / "results"
SOURCE_TARGETS = ["mu", "alpha", "homo", "lumo"]
WAYS = {"scratch": {}, "fine-tune": {"from_model": True},
        "fine-tune-frozen": {"from_model": True, "freeze": ("embed", "message", "update")}}


def qm9_rows(out: Path, first: int, n: int, target: str) -> Path:
    """A CSV of QM9 subset rows ``first .. first + n - 1`` (0-based), SMILES and ``target``."""
    from molpipe.data.registry import get_dataset

    with open(get_dataset("qm9").path, newline="") as f:
        rows = list(csv.DictReader(f))[first:first + n]
    with open(out, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", target])
        w.writerows([r["smiles"], r[target]] for r in rows)
    return out


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--source-limit", type=int, default=4000)
    ap.add_argument("--source-epochs", type=int, default=20)
    ap.add_argument("--small", type=int, default=300)
    ap.add_argument("--epochs", type=int, default=60)
    ap.add_argument("--seeds", type=int, nargs="+", default=[0, 1, 2])
    ap.add_argument("--hidden", type=int, default=64)
    ap.add_argument("--out", type=Path, default=RESULTS / "transfer.json")
    args = ap.parse_args()

    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    work = Path(tempfile.mkdtemp(prefix="bench-transfer-"))
    common = dict(hidden=args.hidden, schedule="async")
    t0 = time.perf_counter()
    source_dir = work / "source"
    source = train(TrainConfig(data="qm9", targets=SOURCE_TARGETS, limit=args.source_limit,
                               epochs=args.source_epochs, **common), source_dir)
    doc = {"command": " ".join(["python", "benchmarks/bench_transfer.py", *sys.argv[1:]]),
           "machine": f"{platform.processor() or platform.machine()}, shared (noisy)",
           "source": {"data": "qm9", "targets": SOURCE_TARGETS, "limit": args.source_limit,
                      "epochs": args.source_epochs, "hidden": args.hidden,
                      "wall_seconds": time.perf_counter() - t0,
                      "test_summary": source["test_summary"]},
           "small": args.small, "epochs": args.epochs, "split_fractions": [0.5, 0.1, 0.4],
           "runs": []}
    sets = {"qm9-cv": (str(qm9_rows(work / "qm9_cv.csv", 8000, args.small, "cv")), ["cv"],
                       "mae"),
            "esol": ("esol", None, "rmse")}
    for name, (data, targets, metric) in sets.items():
        for seed in args.seeds:
            for way, extra in WAYS.items():
                kw = {k: (str(source_dir) if k == "from_model" else v) for k, v in extra.items()}
                config = TrainConfig(data=data, targets=targets, limit=args.small, seed=seed,
                                     epochs=args.epochs, split_fractions=(0.5, 0.1, 0.4),
                                     **common, **kw)
                t = time.perf_counter()
                report = train(config, work / f"{name}-{seed}-{way}")
                run = {"set": name, "seed": seed, "way": way, "metric": metric,
                       "test": report["test_summary"][metric],
                       "wall_seconds": time.perf_counter() - t,
                       "train_seconds": report["train_seconds"], "epochs": report["epochs"],
                       "best_epoch": report["best_epoch"]}
                doc["runs"].append(run)
                print(json.dumps(run), flush=True)
    args.out.parent.mkdir(parents=True, exist_ok=True)
    args.out.write_text(json.dumps(doc, indent=2) + "\n")
    print(f"\nsource: {args.source_limit} QM9 molecules, {args.source_epochs} epochs, "
          f"{doc['source']['wall_seconds']:.0f} s\n")
    print("| set | metric | way | test (mean ± SD) | wall s (mean) |")
    print("| --- | --- | --- | --- | --- |")
    for name, (_, _, metric) in sets.items():
        for way in WAYS:
            runs = [r for r in doc["runs"] if r["set"] == name and r["way"] == way]
            v = np.array([r["test"] for r in runs])
            s = np.array([r["wall_seconds"] for r in runs])
            print(f"| {name} | {metric.upper()} | {way} | {v.mean():.4g} ± {v.std(ddof=1) if len(v) > 1 else 0:.2g} "
                  f"| {s.mean():.1f} |")
    print(f"\n{args.out}")


if __name__ == "__main__":
    main()
