"""The accuracy matrix: molpipe's defaults beside chemprop 2.3.1 on the same rows and split.

    python benchmarks/bench_accuracy.py [--chemprop VENV/bin/chemprop] [--tools molpipe chemprop]
        [--sets esol lipo ...] [--splits random scaffold] [--seeds 0 1 2]
        [--molpipe-args "--aggregation sum"] [--tag NAME] [--out FILE] [--force]

For every set × split × seed the benchmark writes one CSV (the SMILES and targets of the rows
molpipe keeps, in store order) and one split (molpipe's random or Murcko-scaffold split of
that seed, 80/10/10), then trains each tool on exactly those rows and that split as its
command line does with its defaults (``molpipe train CSV --split SPLIT.json``;
``chemprop train -i CSV --splits-file ...``), both as subprocesses, one after the other.
Test errors of both are computed here, by molpipe.training.metrics, from each tool's test
predictions on the same test rows. chemprop is not a molpipe dependency: it lives in a venv
of its own (``python -m venv cp && cp/bin/pip install torch==2.13.0 chemprop==2.3.1``);
without ``--chemprop`` only molpipe runs.

Results are kept per run in ``--out`` (default ``benchmarks/results/accuracy-matrix.json``,
keyed ``tool/tag/set/split/seed``): a later invocation skips runs already there (``--force``
reruns them), so the two tools can run in separate invocations of one sitting. The summary
(mean ± SD over seeds per cell, wall seconds per run) is printed as Markdown tables.
"""

from __future__ import annotations

import argparse
import csv
import dataclasses
import fcntl
import gzip
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
RESULTS = ROOT / "benchmarks" / "results"
MOSES = ROOT.parent / "shared" / "data" / "moses_train.csv.gz"


@dataclass(frozen=True)
class Set:
    """One row block of the matrix: a data set, its targets and how both tools train it."""

    data: str                       # bundled name, or "moses-tpsa" (built here)
    targets: tuple[str, ...] | None = None   # None: the bundled set's targets
    metric: str = "rmse"            # rmse | mae (regression, mean over targets) | auc
    limit: int | None = None        # the first N molecules only
    epochs: int = 50
    seeds: tuple[int, ...] | None = None     # None: the command line's --seeds
    note: str = ""


SETS = {
    "esol": Set("esol"),
    "freesolv": Set("freesolv"),
    "lipo": Set("lipo", epochs=30),
    "qm9-gap": Set("qm9", ("gap",), "mae", limit=10_000, epochs=30),
    "qm9-u0": Set("qm9", ("u0",), "mae", limit=10_000, epochs=30),
    "qm9-cv": Set("qm9", ("cv",), "mae", limit=10_000, epochs=30),
    "qm8": Set("qm8", None, "mae", epochs=20, seeds=(0,), note="one seed, 20 epochs"),
    "bace": Set("bace", metric="auc"),
    "clintox": Set("clintox", metric="auc"),
    "sider": Set("sider", metric="auc"),
    "tox21": Set("tox21", metric="auc", epochs=30),
    "hiv": Set("hiv", metric="auc", epochs=10, seeds=(0,), note="one seed, 10 epochs"),
    "moses-tpsa": Set("moses-tpsa", ("tpsa",), note="5,000 MOSES molecules, RDKit TPSA"),
}


def moses_tpsa(path: Path, n: int = 5000, seed: int = 0) -> Path:
    """An extensive property on molecules unlike the bundled sets: RDKit's TPSA of ``n``
    molecules drawn (seeded) from the MOSES training set."""
    if path.exists():
        return path
    from rdkit import Chem
    from rdkit.Chem import rdMolDescriptors

    with gzip.open(MOSES, "rt") as f:
        smiles = [row[0] for row in csv.reader(f)][1:]
    pick = np.random.default_rng(seed).choice(len(smiles), n, replace=False)
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "tpsa"])
        for i in sorted(pick):
            w.writerow([smiles[i], f"{rdMolDescriptors.CalcTPSA(Chem.MolFromSmiles(smiles[i])):.3f}"])
    return path


@dataclass
class Cell:
    """The files of one set × split × seed, shared by both tools."""

    csv: Path
    split: Path                  # molpipe's {"train": [...], "val": [...], "test": [...]}
    chemprop_split: Path         # chemprop's [{"train": ..., "val": ..., "test": ...}]
    targets: list[str]
    task: str
    Y: np.ndarray                # (n_rows, n_targets) the targets as written, NaN = missing
    test: np.ndarray             # row indices of the test split
    sizes: dict = field(default_factory=dict)


def make_cell(name: str, split: str, seed: int, work: Path) -> Cell:
    """Write the rows molpipe keeps (first ``limit``) and the split of ``seed`` for both tools."""
    from molpipe.data.store import open_data
    from molpipe.training.session import infer_task, split_indices

    s = SETS[name]
    data = moses_tpsa(work / "moses-tpsa.csv") if s.data == "moses-tpsa" else s.data
    store = open_data(data, targets=list(s.targets) if s.targets else None)
    n = len(store.smiles) if s.limit is None else min(s.limit, len(store.smiles))
    smiles, Y = store.smiles[:n], np.asarray(store.targets[:n], np.float64)
    targets = list(store.target_names)
    task = infer_task(Y)
    parts = split_indices(smiles, split, (0.8, 0.1, 0.1), seed)
    stem = f"{name}-{split}-{seed}"
    path = work / f"{name}.csv"
    if not path.exists():
        with open(path, "w", newline="") as f:
            w = csv.writer(f)
            w.writerow(["smiles", *targets])
            for smi, y in zip(smiles, Y):
                w.writerow([smi, *("" if np.isnan(v) else (f"{v:.0f}" if task == "classification"
                                                           else repr(float(v))) for v in y)])
    idx = {k: [int(i) for i in v] for k, v in parts.items()}
    (work / f"{stem}.json").write_text(json.dumps(idx))
    (work / f"{stem}-chemprop.json").write_text(json.dumps([idx]))
    return Cell(path, work / f"{stem}.json", work / f"{stem}-chemprop.json", targets, task, Y,
                parts["test"], {k: len(v) for k, v in idx.items()})


def score(cell: Cell, P: np.ndarray) -> dict:
    """Per-target test metrics of predictions ``P`` (test rows × targets) and their means."""
    from molpipe.training.metrics import metrics_table

    per = metrics_table(cell.task, cell.targets, cell.Y[cell.test], P)
    keys = ("auc",) if cell.task == "classification" else ("rmse", "mae", "r2")
    mean = {}
    for k in keys:
        v = [m[k] for m in per.values() if np.isfinite(m[k])]
        mean[k] = float(np.mean(v)) if v else float("nan")
    return {"per_target": per, **mean}


def _run(cmd: list[str], threads: int | None = None) -> float:
    env = dict(os.environ)
    if threads:
        env.update(OMP_NUM_THREADS=str(threads), MKL_NUM_THREADS=str(threads))
    t0 = time.perf_counter()
    done = subprocess.run(cmd, capture_output=True, text=True, env=env)
    if done.returncode != 0:
        raise RuntimeError(f"{shlex.join(cmd[:4])} ... failed:\n{done.stderr[-3000:]}")
    return time.perf_counter() - t0


def run_molpipe(cell: Cell, s: Set, seed: int, out: Path, extra: list[str]) -> dict:
    cmd = [sys.executable, str(ROOT / "cli.py"), "train", str(cell.csv), "--split", str(cell.split),
           "--seed", str(seed), "--epochs", str(s.epochs), "--task", cell.task, "--out", str(out),
           "--overwrite", "--quiet", *(a for t in cell.targets for a in ("--target", t)), *extra]
    wall = _run(cmd)
    report = json.loads((out / "report.json").read_text())
    preds = list(csv.DictReader(open(out / "test_predictions.csv")))
    P = np.array([[float(r[f"pred_{t}"]) for t in cell.targets] for r in preds])
    rows = np.array([int(r["row"]) - 1 for r in preds])         # 1-based data rows of the CSV
    if not np.array_equal(rows, cell.test):
        raise RuntimeError(f"molpipe's test rows differ from the split's ({cell.csv})")
    return {"wall_seconds": wall, **score(cell, P), "epochs_run": report["epochs"],
            "train_molecules_per_second": report["train_molecules_per_second"],
            "aggregation": report["config"].get("aggregation")}


def run_chemprop(exe: str, cell: Cell, s: Set, seed: int, out: Path, threads: int | None) -> dict:
    cmd = [exe, "train", "-i", str(cell.csv), "-s", "smiles", "--target-columns", *cell.targets,
           "-t", cell.task, "--epochs", str(s.epochs), "--splits-file", str(cell.chemprop_split),
           "--pytorch-seed", str(seed), "--data-seed", str(seed), "-n", "0",
           "--accelerator", "cpu", "-o", str(out)]
    wall = _run(cmd, threads)
    preds = list(csv.DictReader(open(out / "model_0" / "test_predictions.csv")))
    with open(cell.csv, newline="") as f:
        smiles = [r["smiles"] for r in csv.DictReader(f)]
    if [r["smiles"] for r in preds] != [smiles[i] for i in cell.test]:
        raise RuntimeError(f"chemprop's test rows differ from the split's ({cell.csv})")
    P = np.array([[float(r[t]) for t in cell.targets] for r in preds])
    return {"wall_seconds": wall, **score(cell, P)}


def _mean_sd(values: list[float], digits: int | None = None) -> str:
    v = np.array([x for x in values if x is not None and np.isfinite(x)])
    if not v.size:
        return "n/a"
    if digits is None:
        digits = 3 if abs(v.mean()) >= 0.1 else 5
    sd = f" ± {v.std(ddof=1):.{digits}f}" if v.size > 1 else ""
    return f"{v.mean():.{digits}f}{sd}"


def table(results: dict, tag: str, sets: list[str], splits: list[str], compact: bool = False) -> str:
    """Markdown: one row per set × split, molpipe beside chemprop, mean ± SD over seeds; the
    ratio and the tally compare the seeds both tools ran. ``compact``: without R² and wall."""
    lines = ["| set | split | metric | seeds, molpipe / chemprop | molpipe | chemprop | "
             "molpipe / chemprop | R², molpipe / chemprop | wall s, molpipe / chemprop |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    if compact:
        lines = ["| set | split | test | seeds | molpipe | chemprop 2.3.1 | molpipe / chemprop |",
                 "| --- | --- | --- | --- | --- | --- | --- |"]
    ratios, wins, cells = [], 0, 0
    for name in sets:
        metric = SETS[name].metric
        for split in splits:
            runs = {tool: {k.rsplit("/", 1)[1]: r for k, r in results.items()
                           if k.startswith(f"{tool}/{tag if tool == 'molpipe' else 'default'}/"
                                           f"{name}/{split}/")}
                    for tool in ("molpipe", "chemprop")}
            if not runs["molpipe"] and not runs["chemprop"]:
                continue
            m = [r[metric] for r in runs["molpipe"].values()]
            c = [r[metric] for r in runs["chemprop"].values()]
            both = sorted(set(runs["molpipe"]) & set(runs["chemprop"]))
            ratio = ""
            if both:
                r = float(np.nanmean([runs["molpipe"][s][metric] for s in both])
                          / np.nanmean([runs["chemprop"][s][metric] for s in both]))
                ratio = f"{r:.3f}"
                cells += 1
                wins += r >= 1 if metric == "auc" else r <= 1
                if metric != "auc":
                    ratios.append(r)
            wall = " / ".join(_mean_sd([r["wall_seconds"] for r in runs[t].values()], 0)
                              for t in ("molpipe", "chemprop"))
            r2 = ("" if metric == "auc" else " / ".join(
                _mean_sd([r["r2"] for r in runs[t].values()], 5) for t in ("molpipe", "chemprop")))
            row = (f"| {name} | {split} | {'ROC-AUC' if metric == 'auc' else metric.upper()} "
                   f"| {len(m)} / {len(c)} | {_mean_sd(m)} | {_mean_sd(c)} | {ratio} |")
            lines.append(row if compact else f"{row} {r2} | {wall} |")
    if cells:
        lines.append(f"\nmolpipe at least level with chemprop in {wins} of {cells} cells")
    if ratios:
        lines.append(f"mean molpipe / chemprop error over the {len(ratios)} regression cells: "
                     f"{np.mean(ratios):.3f} (median {np.median(ratios):.3f})")
    return "\n".join(lines)


def explored(explore: dict, matrix: dict) -> str:
    """Markdown: per molpipe tag of an exploration file, its error beside chemprop's (matrix)
    and the matrix's default on the same runs (set/split/seed), mean of the ratios; ROC-AUC
    counted as chemprop / molpipe, so that below 1 is better throughout."""
    def ratio(run: dict, base: dict, metric: str) -> float:
        return base[metric] / run[metric] if metric == "auc" else run[metric] / base[metric]

    tags = sorted({k.split("/")[1] for k in explore if k.startswith("molpipe/")})
    lines = ["| tag | molpipe args | runs | sets | error / chemprop | the default's, same runs |",
             "| --- | --- | --- | --- | --- | --- |"]
    for tag in tags:
        mine = {k.split("/", 2)[2]: r for k, r in explore.items() if k.startswith(f"molpipe/{tag}/")}
        vs_cp, vs_default = [], []
        for cell, r in mine.items():
            metric = SETS[cell.split("/")[0]].metric
            cp, default = matrix.get(f"chemprop/default/{cell}"), matrix.get(f"molpipe/default/{cell}")
            if cp is not None and default is not None:
                vs_cp.append(ratio(r, cp, metric))
                vs_default.append(ratio(default, cp, metric))
        args = next(iter(mine.values())).get("molpipe_args") or ""
        names = sorted({c.split("/")[0] for c in mine})
        if vs_cp:
            lines.append(f"| {tag} | `{args}` | {len(vs_cp)} | {', '.join(names)} | "
                         f"{np.mean(vs_cp):.3f} | {np.mean(vs_default):.3f} |")
    return "\n".join(lines)


BLOCKS = ("matrix", "matrix-compact", "explored")


def fill(path: Path, blocks: dict[str, str]) -> None:
    """Replace the text between ``<!-- name -->`` and ``<!-- /name -->`` in a Markdown file
    with ``blocks[name]`` (the README's tables come from the results, never typed)."""
    text = path.read_text()
    for name, body in blocks.items():
        start, end = f"<!-- {name} -->\n", f"<!-- /{name} -->"
        if start in text:
            head, rest = text.split(start, 1)
            text = f"{head}{start}{body}\n{end}{rest.split(end, 1)[1]}"
    path.write_text(text)


def _update(path: Path, change) -> dict:
    """Apply ``change(doc)`` to the results file under a lock (the two tools may run as two
    invocations at once) and write it back by rename; returns the new document."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with open(path.with_suffix(".lock"), "w") as lock:
        fcntl.flock(lock, fcntl.LOCK_EX)
        doc = json.loads(path.read_text()) if path.exists() else {"runs": {}, "sittings": []}
        change(doc)
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(doc, indent=1))
        os.replace(tmp, path)
    return doc


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--chemprop", help="chemprop executable (its own venv); omit to run molpipe alone")
    ap.add_argument("--tools", nargs="+", default=None, choices=("molpipe", "chemprop"))
    ap.add_argument("--sets", nargs="+", default=list(SETS), choices=list(SETS))
    ap.add_argument("--splits", nargs="+", default=["random", "scaffold"], choices=("random", "scaffold"))
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--molpipe-args", default="", help="more `molpipe train` options")
    ap.add_argument("--tag", default="default", help="name of this molpipe configuration")
    ap.add_argument("--out", type=Path, default=RESULTS / "accuracy-matrix.json")
    ap.add_argument("--work", type=Path, default=Path("/tmp/molpipe-bench-accuracy"))
    ap.add_argument("--force", action="store_true", help="rerun runs already in --out")
    ap.add_argument("--chemprop-threads", type=int, default=None,
                    help="OMP/MKL threads of chemprop's torch (default: torch's own, all cores)")
    ap.add_argument("--epochs", type=int, default=None, help="override every set's epochs (smoke tests)")
    ap.add_argument("--table", action="store_true", help="only print the table of --out")
    ap.add_argument("--compact", action="store_true", help="--table without R² and wall times")
    ap.add_argument("--explored", type=Path, default=None, metavar="FILE",
                    help="only print FILE's molpipe tags against chemprop and the default of --out")
    ap.add_argument("--fill", type=Path, nargs="+", default=None, metavar="MD",
                    help="only rewrite the marked tables (matrix, matrix-compact, explored) of "
                         "these Markdown files from --out and results/accuracy-explore.json")
    args = ap.parse_args()
    if args.fill:
        runs = json.loads(args.out.read_text())["runs"]
        explore = RESULTS / "accuracy-explore.json"
        blocks = {"matrix": table(runs, args.tag, args.sets, args.splits),
                  "matrix-compact": table(runs, args.tag, args.sets, args.splits, True)}
        if explore.exists():
            blocks["explored"] = explored(json.loads(explore.read_text())["runs"], runs)
        for md in args.fill:
            fill(md, blocks)
        return
    if args.explored:
        print(explored(json.loads(args.explored.read_text())["runs"],
                       json.loads(args.out.read_text())["runs"]))
        return
    if args.table:
        print(table(json.loads(args.out.read_text())["runs"], args.tag, args.sets, args.splits,
                    args.compact))
        return
    tools = args.tools or (["molpipe", "chemprop"] if args.chemprop else ["molpipe"])
    if "chemprop" in tools and not args.chemprop:
        ap.error("--tools chemprop needs --chemprop PATH")
    extra = shlex.split(args.molpipe_args)
    args.work.mkdir(parents=True, exist_ok=True)
    sitting = {"started": time.strftime("%Y-%m-%d %H:%M:%S"), "tools": tools, "tag": args.tag,
               "molpipe_args": args.molpipe_args,
               "machine": f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores",
               "chemprop": subprocess.run([args.chemprop, "--version"], capture_output=True,
                                          text=True).stdout.strip() if args.chemprop else None}
    doc = _update(args.out, lambda d: d["sittings"].append(sitting))
    # seed by seed, so that every cell has one seed before any has three
    for seed in args.seeds:
        for name in args.sets:
            s = SETS[name]
            if args.epochs:
                s = dataclasses.replace(s, epochs=args.epochs)
            if s.seeds is not None and seed not in s.seeds:
                continue
            for split in args.splits:
                cell = None
                for tool in tools:
                    key = f"{tool}/{args.tag if tool == 'molpipe' else 'default'}/{name}/{split}/{seed}"
                    if key in doc["runs"] and not args.force:
                        continue
                    cell = cell or make_cell(name, split, seed, args.work)
                    out = args.work / "runs" / key.replace("/", "-")
                    try:
                        res = (run_molpipe(cell, s, seed, out, extra) if tool == "molpipe"
                               else run_chemprop(args.chemprop, cell, s, seed, out,
                                                 args.chemprop_threads))
                    except RuntimeError as err:
                        print(f"{key}: FAILED {err}", flush=True)
                        continue
                    res.update(sizes=cell.sizes, epochs=s.epochs, threads=args.chemprop_threads
                               if tool == "chemprop" else None, molpipe_args=args.molpipe_args
                               if tool == "molpipe" else None, when=time.strftime("%Y-%m-%d %H:%M"))
                    doc = _update(args.out, lambda d: d["runs"].__setitem__(key, res))
                    print(f"{key}: {s.metric} {res[s.metric]:.5g} ({res['wall_seconds']:.0f} s)",
                          flush=True)
    print(table(doc["runs"], args.tag, args.sets, args.splits))


if __name__ == "__main__":
    main()
