"""A mean-variance head against the mean-squared error on one data set: test RMSE of each,
and how well the head's predicted SD ranks and covers its own test errors.

    python benchmarks/bench_mve.py [--data esol] [--split random] [--seeds 0 1 2]
        [--epochs 50] [--out benchmarks/results/mve-esol.json]

For every seed the bench trains ``molpipe train DATA --loss mse`` and ``--loss mve`` (the
defaults otherwise, the same split and seed), loads each run's model as ``molpipe predict``
does and predicts the run's test molecules. For mve it reports, on the test split, the
Spearman rho between |error| and the predicted SD, the share of test errors within ±1 SD
and ±1.96 SD (68 % and 95 % for a calibrated Gaussian), and the mean predicted SD beside
the RMSE. No recalibration is applied.
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

from molpipe.inference.predict import Predictor  # noqa: E402
from molpipe.training.settings import TrainConfig  # noqa: E402
from molpipe.training.train import train  # noqa: E402


def test_rows(run_dir: Path):
    """(SMILES, measured (n, t)) of a run's test split, from its test_predictions.csv."""
    with open(run_dir / "test_predictions.csv", newline="") as f:
        rows = list(csv.reader(f))
    n_t = (len(rows[0]) - 2) // 2
    smiles = [r[1] for r in rows[1:]]
    Y = np.array([[float(v) if v not in ("", "nan") else np.nan for v in r[2:2 + n_t]]
                  for r in rows[1:]])
    saved = np.array([[float(v) for v in r[2 + n_t:]] for r in rows[1:]])
    return smiles, Y, saved


def calibration(err: np.ndarray, sd: np.ndarray) -> dict:
    """Spearman rho(|err|, sd), coverage of ±1 and ±1.96 SD, and the Gaussian NLL (data
    units, with the 0.5 log 2 pi), over the finite cells."""
    from scipy.stats import spearmanr

    ok = np.isfinite(err) & np.isfinite(sd)
    e, s = np.abs(err[ok]), sd[ok]
    rho = spearmanr(e, s).statistic
    return {"n": int(ok.sum()), "spearman_abs_error_sd": float(rho),
            "within_1sd": float(np.mean(e <= s)), "within_1.96sd": float(np.mean(e <= 1.96 * s)),
            "mean_sd": float(np.mean(s)), "rms_sd": float(np.sqrt(np.mean(s * s))),
            "nll": float(np.mean(0.5 * np.log(2 * np.pi * s * s) + 0.5 * (e / s) ** 2))}


def one_run(data: str, split: str, seed: int, loss: str, epochs: int, root: Path) -> dict:
    out = root / f"{loss}-{seed}"
    t0 = time.perf_counter()
    report = train(TrainConfig(data=data, split=split, seed=seed, loss=loss, epochs=epochs,
                               cache_root=str(root / "cache")), out)
    wall = time.perf_counter() - t0
    predictor = Predictor.load(out)
    smiles, Y, saved = test_rows(out)
    graphs = [predictor.featurize(s) for s in smiles]
    P, S = predictor.predict_graphs_with_std(graphs)
    err = P - Y
    ok = np.isfinite(err)
    res = {"loss": loss, "seed": seed, "epochs_run": report["epochs"], "wall_seconds": wall,
           "test": report["test"],
           "rmse": float(np.sqrt(np.mean(err[ok] ** 2))), "mae": float(np.mean(np.abs(err[ok]))),
           # the loaded model predicts what the run scored (float32: ~1e-6)
           "max_diff_from_run": float(np.nanmax(np.abs(P - saved)))}
    if S is not None:
        res["calibration"] = calibration(err, S)
    return res


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--data", default="esol")
    ap.add_argument("--split", default="random")
    ap.add_argument("--seeds", type=int, nargs="+", default=[0])
    ap.add_argument("--epochs", type=int, default=TrainConfig().epochs)
    ap.add_argument("--out", type=Path, default=None)
    a = ap.parse_args()
    out = a.out or ROOT / "benchmarks" / "results" / f"mve-{a.data}.json"
    runs = []
    with tempfile.TemporaryDirectory() as tmp:
        for seed in a.seeds:
            for loss in ("mse", "mve"):
                r = one_run(a.data, a.split, seed, loss, a.epochs, Path(tmp))
                runs.append(r)
                cal = r.get("calibration", {})
                print(f"seed {seed} {loss}: test RMSE {r['rmse']:.4f} MAE {r['mae']:.4f} "
                      f"({r['wall_seconds']:.0f} s)"
                      + (f"; rho(|err|, sd) {cal['spearman_abs_error_sd']:.3f}, within 1 sd "
                         f"{cal['within_1sd']:.1%}, within 1.96 sd {cal['within_1.96sd']:.1%}, "
                         f"mean sd {cal['mean_sd']:.3f}" if cal else ""), flush=True)
    summary = {}
    for loss in ("mse", "mve"):
        mine = [r for r in runs if r["loss"] == loss]
        keys = ["rmse", "mae"] + (["spearman_abs_error_sd", "within_1sd", "within_1.96sd",
                                   "mean_sd", "nll"] if loss == "mve" else [])
        vals = {k: [r.get(k, r.get("calibration", {}).get(k)) for r in mine] for k in keys}
        summary[loss] = {k: {"mean": float(np.mean(v)), "sd": float(np.std(v, ddof=1)) if len(v) > 1
                             else None} for k, v in vals.items()}
    doc = {"data": a.data, "split": a.split, "seeds": a.seeds, "epochs": a.epochs,
           "command": "python benchmarks/bench_mve.py " + " ".join(sys.argv[1:]),
           "machine": f"{platform.machine()}, {platform.python_version()}, shared 2 cores (noisy)",
           "summary": summary, "runs": runs}
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(doc, indent=2) + "\n")
    print(json.dumps(summary, indent=2))
    print(f"written {out}")


if __name__ == "__main__":
    main()
