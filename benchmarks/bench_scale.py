"""The figures of issue #20 ("a million molecules on one machine"): one subcommand each,
each printing JSON.

``train``: one training epoch streamed from a labelled MOSES store (the first ``--n`` rows
of ``../shared/data/moses_train.csv.gz``, labelled with RDKit's Crippen logP and TPSA —
fast descriptors, chosen for scale, not for science — and featurized by ``molpipe
preprocess --jobs 2``), beside the same model (same settings, one epoch) on the bundled QM9
subset: training molecules/s, atoms/s, epoch seconds and the peak RSS (VmHWM) of a fresh
process per run.

Run:  nice -n 5 python benchmarks/bench_scale.py train --n 100000 300000 --val-max 5000
      [--epochs 1] [--scratch /work/scratch/stream] [--json out.json]
"""

from __future__ import annotations

import argparse
import csv
import gzip
import json
import os
import subprocess
import sys
import time
from pathlib import Path

ROOT = Path(__file__).resolve().parents[1]
MOSES = ROOT.parent / "shared" / "data" / "moses_train.csv.gz"
SCRATCH = Path(os.environ.get("MOLPIPE_SCALE_SCRATCH", "/work/scratch/stream"))


def _env() -> dict:
    return {**os.environ, "PYTHONPATH": str(ROOT)}


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


def label_moses(n: int, out: Path, source: Path = MOSES, jobs: int = 2,
                block: int = 20_000) -> dict:
    """Write the first ``n`` rows of ``source`` with Crippen logP and TPSA to ``out``
    (``.csv.gz``), labelling on ``jobs`` processes; rows and seconds."""
    from multiprocessing import get_context

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
                    "tpsa", "--jobs", "2"], check=True, env=_env(), cwd=ROOT)
    print(json.dumps({"preprocessed": n, "seconds": round(time.perf_counter() - t0, 1)}),
          file=sys.stderr, flush=True)
    return store


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = parser.add_subparsers(dest="command", required=True)
    p = sub.add_parser("label", help="write the labelled MOSES rows and their store")
    p.add_argument("--n", type=int, default=300_000)
    p.add_argument("--scratch", type=Path, default=SCRATCH)
    args = parser.parse_args()
    if args.command == "label":
        print(json.dumps({"store": str(moses_store(args.n, args.scratch))}))


if __name__ == "__main__":
    main()
