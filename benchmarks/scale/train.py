"""``train``: one training epoch streamed from a labelled MOSES store (the first ``--n`` rows
of ``../shared/data/moses_train.csv.gz``, labelled with RDKit's Crippen logP and TPSA —
fast descriptors, chosen for scale, not for science — and featurized by ``molpipe
preprocess --jobs 2``), beside the same model (same settings, one epoch) on the bundled QM9
subset: training molecules/s, atoms/s, epoch seconds and the peak RSS (VmHWM) of a fresh
process per run.

Run:  nice -n 5 python benchmarks/bench_scale.py train --n 100000 300000 --val-max 5000
      [--epochs 1] [--scratch /work/scratch/stream] [--json out.json]
"""

from __future__ import annotations

import csv
import gzip
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale.common import ROOT, SCRIPT, child_env, moses_path

SCRATCH = Path(os.environ.get("MOLPIPE_SCALE_SCRATCH",
                            Path(tempfile.gettempdir()) / "molpipe-scale"))


# -- train: a labelled MOSES store, one epoch streamed from it ----------------------------------


def _label_rows(smiles: list[str]) -> list[tuple[str, str, str]]:
    """(SMILES, logP, TPSA) of every row; empty labels where RDKit reads no molecule (the
    store's rejects file then lists the row)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Crippen, rdMolDescriptors

    RDLogger.DisableLog("rdApp.*")
    out = []
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        if mol is None:
            out.append((s, "", ""))
        else:
            out.append((s, f"{Crippen.MolLogP(mol):.4f}", f"{rdMolDescriptors.CalcTPSA(mol):.3f}"))
    return out


def label_moses(n: int, out: Path, source: Path | None = None, jobs: int = 2,
                block: int = 20_000) -> dict:
    """Write the first ``n`` rows of ``source`` with Crippen logP and TPSA to ``out``
    (``.csv.gz``), labelling on ``jobs`` processes; rows and seconds."""
    from multiprocessing import get_context

    source = source or moses_path()
    t0 = time.perf_counter()
    tmp = out.with_name(out.name + ".tmp")
    rows = 0
    with gzip.open(source, "rt", encoding="utf-8") as f, \
            gzip.open(tmp, "wt", encoding="utf-8", newline="", compresslevel=3) as g, \
            get_context("fork").Pool(jobs) as pool:
        header = f.readline().strip()
        if header != "SMILES":
            raise SystemExit(f"{source}: expected the header 'SMILES', got {header!r}")
        w = csv.writer(g)
        w.writerow(["SMILES", "logp", "tpsa"])

        def blocks():
            nonlocal rows
            while rows < n:
                lines = [line.strip() for _, line in zip(range(min(block, n - rows)), f)]
                if not lines:
                    return
                rows += len(lines)
                yield lines

        for labelled in pool.imap(_label_rows, blocks()):
            w.writerows(labelled)
    os.replace(tmp, out)
    return {"rows": rows, "label_seconds": round(time.perf_counter() - t0, 1)}


def moses_store(n: int, scratch: Path = SCRATCH) -> Path:
    """The store of the first ``n`` MOSES rows, labelled (built once, then reused)."""
    scratch.mkdir(parents=True, exist_ok=True)
    store = scratch / f"moses-{n}-store"
    if (store / "meta.json").is_file():
        return store
    csv_gz = scratch / f"moses_labelled-{n}.csv.gz"
    if not csv_gz.is_file():
        print(json.dumps({"labelling": n, **label_moses(n, csv_gz)}), file=sys.stderr, flush=True)
    t0 = time.perf_counter()
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "preprocess", str(csv_gz), "-o",
                    str(store), "--smiles-column", "SMILES", "--target", "logp", "--target",
                    "tpsa", "--jobs", "2"], check=True, env=child_env(), cwd=ROOT)
    print(json.dumps({"preprocessed": n, "seconds": round(time.perf_counter() - t0, 1)}),
          file=sys.stderr, flush=True)
    return store


def _status_kib(*names: str) -> dict[str, int]:
    """Fields of /proc/self/status in KiB (VmHWM: the peak resident set, what ru_maxrss says)."""
    with open("/proc/self/status") as f:
        found = dict(line.split(":", 1) for line in f if ":" in line)
    return {n: int(found[n].split()[0]) for n in names if n in found}


def train_child(data: str, targets: list[str], limit: int | None, epochs: int,
                val_max: int | None, out: Path) -> dict:
    """One ``molpipe train`` run in this (fresh) process: its speed and peak memory."""
    import threading

    import numpy as np

    from molpipe.data.store import open_data
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    try:
        from molpipe.training.stream import LIVE
    except ImportError:                  # a tree from before streaming (--tree)
        LIVE = None

    peaks = {"RssAnon": 0, "RssFile": 0}
    done = threading.Event()

    def sample():                        # the anonymous and file-backed parts of the peak
        while not done.wait(0.25):
            for k, v in _status_kib("RssAnon", "RssFile").items():
                peaks[k] = max(peaks[k], v)

    marks = {}
    t0 = time.perf_counter()

    def progress(event, **kw):
        if event == "start":              # opened, split, scaling fitted, network built
            marks["setup_seconds"] = time.perf_counter() - t0
            marks["setup_vmhwm_kib"] = _status_kib("VmHWM")["VmHWM"]

    threading.Thread(target=sample, daemon=True).start()
    config = TrainConfig(data=data, targets=targets, limit=limit, epochs=epochs,
                         **({"val_max": val_max} if val_max else {}))
    report = train(config, out, progress=progress)
    wall = time.perf_counter() - t0
    done.set()
    hwm = _status_kib("VmHWM")["VmHWM"]
    split = json.loads((out / "split.json").read_text())
    store = open_data(data)
    train_rows = np.asarray(split["train"], np.int64)
    atoms = int(store.n_atoms[train_rows].sum())
    # the work of an atom grows with its molecule's propagation rounds (2-6 by diameter)
    atom_rounds = int((store.n_atoms[train_rows] * store.n_rounds[train_rows]).sum())
    n_train = report["split_sizes"]["train"]
    secs = report["train_seconds"]
    return {
        "data": data, "targets": targets, "limit": limit, "epochs": report["epochs"],
        "n_molecules": sum(report["split_sizes"].values()), "n_train": n_train,
        "validation": report.get("validation"),
        "molecules_per_instance": report["molecules_per_instance"],
        "train_atoms": atoms, "atoms_per_molecule": round(atoms / n_train, 2),
        "epoch_seconds": round(secs / max(report["epochs"], 1), 1),
        "train_molecules_per_s": round(n_train * report["epochs"] / secs, 1),
        "train_atoms_per_s": round(atoms * report["epochs"] / secs, 1),
        "mean_rounds_per_atom": round(atom_rounds / atoms, 2),
        "train_atom_rounds_per_s": round(atom_rounds * report["epochs"] / secs, 1),
        "setup_seconds": round(marks.get("setup_seconds", float("nan")), 1),
        "wall_seconds": round(wall, 1),
        "peak_rss_mib": round(hwm / 1024, 1),
        "peak_rss_setup_mib": round(marks.get("setup_vmhwm_kib", 0) / 1024, 1),
        "peak_rss_anon_mib": round(peaks["RssAnon"] / 1024, 1),
        "peak_rss_file_mib": round(peaks["RssFile"] / 1024, 1),
        "peak_live_instances": LIVE and LIVE.peak_instances,
        "peak_live_molecules": LIVE and LIVE.peak_molecules,
        "test": report["test_summary"],
        "load_avg_1min_at_end": round(os.getloadavg()[0], 2),
    }


def _run_child(data: str, targets: list[str], limit: int | None, epochs: int,
               val_max: int | None, out: Path, tree: Path | None = None) -> dict:
    """``train_child`` in a fresh process (its VmHWM is its own), molpipe from ``tree``."""
    cmd = [sys.executable, str(SCRIPT), "train-child", "--data", data, "--targets", *targets,
           "--epochs", str(epochs), "--out", str(out)]
    cmd += ["--limit", str(limit)] if limit else []
    cmd += ["--val-max", str(val_max)] if val_max else []
    load = os.getloadavg()[0]
    proc = subprocess.run(cmd, check=True, env=child_env(tree), cwd=ROOT, stdout=subprocess.PIPE,
                          text=True)
    out = json.loads(proc.stdout.strip().splitlines()[-1])
    out["load_avg_1min_at_start"] = round(load, 2)
    out["tree"] = str(tree or ROOT)
    print(json.dumps(out), file=sys.stderr, flush=True)
    return out


def bench_train(ns: list[int], epochs: int = 1, val_max: int | None = 5000,
                store_n: int | None = None, scratch: Path = SCRATCH,
                qm9_targets: tuple[str, ...] = ("homo", "lumo"), qm9: bool = True,
                tree: Path | None = None) -> dict:
    """One epoch streamed from the labelled MOSES store at each of ``ns`` molecules, and
    the same model (default settings, ``epochs``) on the QM9 subset; molpipe imported from
    ``tree`` (default: this checkout; another, e.g. one from before streaming, for the
    figure before)."""
    import shutil

    store = moses_store(store_n or max(ns), scratch)
    runs = scratch / "runs"
    shutil.rmtree(runs, ignore_errors=True)
    moses = [_run_child(str(store), ["logp", "tpsa"], n, epochs, val_max, runs / f"moses-{n}",
                        tree) for n in ns]
    out = {"figure": "one training epoch streamed from the store", "store": str(store),
           "labels": "RDKit Crippen logP and TPSA (fast descriptors, for scale)",
           "settings": "molpipe train defaults, --epochs %d, --val-max %s" % (epochs, val_max),
           "moses": moses}
    if qm9:
        q = _run_child("qm9", list(qm9_targets), None, epochs, val_max, runs / "qm9", tree)
        out["qm9"] = q
        out["ratios_to_qm9"] = [{
            "n": m["limit"],
            "molecules_per_s": round(m["train_molecules_per_s"] / q["train_molecules_per_s"], 3),
            "atoms_per_s": round(m["train_atoms_per_s"] / q["train_atoms_per_s"], 3),
            "atom_rounds_per_s": round(m["train_atom_rounds_per_s"]
                                       / q["train_atom_rounds_per_s"], 3),
            "atoms_per_molecule": round(m["atoms_per_molecule"] / q["atoms_per_molecule"], 3)}
            for m in moses]
    if len(moses) > 1:
        out["peak_rss_mib_by_n"] = {m["limit"]: m["peak_rss_mib"] for m in moses}
    shutil.rmtree(runs, ignore_errors=True)
    return out


def add(sub) -> None:
    """The ``label`` and ``train`` subcommands (and the hidden child)."""
    p = sub.add_parser("label", help="write the labelled MOSES rows and their store")
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--scratch", type=Path, default=SCRATCH)
    p.set_defaults(run=lambda a: {"store": str(moses_store(a.n, a.scratch))})
    p = sub.add_parser("train", help="one epoch streamed from the MOSES store, beside QM9")
    p.add_argument("--n", type=int, nargs="+", default=[100_000, 300_000],
                   help="molecules of the store used (its first N), one run each")
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--val-max", type=int, default=5000)
    p.add_argument("--store-n", type=int, default=None,
                   help="rows of the labelled store (default: the largest --n)")
    p.add_argument("--no-qm9", action="store_true")
    p.add_argument("--tree", type=Path, default=None,
                   help="import molpipe from this checkout (e.g. an older one: the figure before)")
    p.add_argument("--scratch", type=Path, default=SCRATCH)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=lambda a: bench_train(a.n, a.epochs, a.val_max, a.store_n, a.scratch,
                                             qm9=not a.no_qm9, tree=a.tree))
    p = sub.add_parser("train-child")
    p.add_argument("--data", required=True)
    p.add_argument("--targets", nargs="+", required=True)
    p.add_argument("--limit", type=int, default=None)
    p.add_argument("--epochs", type=int, default=1)
    p.add_argument("--val-max", type=int, default=None)
    p.add_argument("--out", type=Path, required=True)
    p.set_defaults(run=lambda a: print(json.dumps(train_child(
        a.data, a.targets, a.limit, a.epochs, a.val_max, a.out))))
