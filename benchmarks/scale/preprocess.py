"""``preprocess``: featurizing against RDKit's parse alone in one process on the same MOSES
SMILES (best of interleaved rounds) and ``GraphStore.pack`` against the graphs-then-pack of
the float32 store it replaced, then ``build_store`` of ``moses_train.csv.gz`` (the first --n
rows; all 1,584,663 by default) with --jobs 1 and --jobs 2, each in a fresh child process
while this process samples the memory (RSS and PSS from /proc) of the child's whole process
tree: molecules/s, the 2-job / 1-job ratio, peak memory, store size on disk, rows kept +
rejected.

Run: nice -n 5 python benchmarks/bench_scale.py preprocess [--n 1584663] [--parse-n 20000]
     [--rounds 5] [--jobs 1 2 1 2] [--json out.json] [--tmp /work/scratch/prep]
"""

from __future__ import annotations

import gzip
import itertools
import json
import os
import resource
import shutil
import sys
import tempfile
import time
from pathlib import Path

from scale.common import MIB, MOSES_ROWS, SCRIPT, moses_head, moses_path, run_sampled


# -- preprocess ------------------------------------------------------------------------------

def featurize_vs_parse(n: int, rounds: int) -> dict:
    """µs per molecule of MolFromSmiles, of the featurizing workers' path (``featurize_batch``
    in blocks of 1,024), of ``featurize()`` one molecule at a time and of the reference
    featurizer, best of ``rounds`` interleaved rounds on the first ``n`` MOSES SMILES."""
    from rdkit import Chem

    from molpipe.chem.batch import featurize_batch
    from molpipe.chem.featurize import featurize, featurize_reference

    with gzip.open(moses_path(), "rt") as f:
        next(f)
        smiles = [line.strip() for line in itertools.islice(f, n)]
    few = smiles[: max(1, n // 10)]
    featurize_batch(smiles[:100])                           # compiled / loaded once
    runs = {"parse": lambda: [Chem.MolFromSmiles(s) for s in smiles],
            "featurize_batch": lambda: [featurize_batch(smiles[k:k + 1024])
                                        for k in range(0, len(smiles), 1024)],
            "featurize": lambda: [featurize(s) for s in smiles],
            "parse_few": lambda: [Chem.MolFromSmiles(s) for s in few],
            "featurize_reference_few": lambda: [featurize_reference(s) for s in few]}
    best = dict.fromkeys(runs, float("inf"))
    loads = []
    names = list(runs)
    for r in range(rounds):
        for name in names[r % len(names):] + names[:r % len(names)]:   # a new order each round
            t = time.perf_counter()
            runs[name]()
            best[name] = min(best[name], time.perf_counter() - t)
        loads.append(os.getloadavg()[0])
    us = {k: v / (len(few) if k.endswith("_few") else len(smiles)) * 1e6 for k, v in best.items()}
    return {"molecules": len(smiles), "rounds": rounds,
            "us_per_mol": {k: round(v, 1) for k, v in us.items()},
            "featurize_batch_over_parse": round(us["featurize_batch"] / us["parse"], 3),
            "featurize_over_parse": round(us["featurize"] / us["parse"], 3),
            "reference_over_parse": round(us["featurize_reference_few"] / us["parse_few"], 3),
            "load_avg_1min": [round(x, 2) for x in loads]}


def pack_speed(n: int, size: int, rounds: int, work: Path) -> dict:
    """µs per molecule of ``GraphStore.pack(rows)`` (one numba call over the compact codes)
    against the float32 store it replaced (V, E ... sliced per molecule, then
    ``instance.pack``), for random groups of ``size`` of the first ``n`` MOSES molecules."""
    import numpy as np

    from molpipe.chem.molgraph import MolGraph
    from molpipe.data.build import build_store
    from molpipe.data.instance import pack
    from molpipe.data.store import GraphStore

    src = moses_head(n, work / f"moses-{n}.csv.gz")
    build_store(src, work / "pack-store", n_jobs=1)
    store = GraphStore.open(work / "pack-store")
    graphs = store.graphs(range(len(store)))
    # the format 1 store, in memory: float32 features per atom and per directed edge
    old = {k: np.concatenate([getattr(g, k) for g in graphs]) for k in ("V", "E", "fragment",
                                                                          "edge_type")}
    old["edges"] = np.concatenate([g.edge_index.T for g in graphs])
    old["ring_atoms"] = np.concatenate([g.ring_atoms for g in graphs])
    old["ring_system"] = np.concatenate([g.ring_system for g in graphs])
    sizes = np.concatenate([np.diff(g.ring_offsets) for g in graphs])
    ring_atom_off = np.concatenate([[0], np.cumsum(sizes)])
    off = {k: np.concatenate([[0], np.cumsum([f(g) for g in graphs])]) for k, f in (
        ("atoms", lambda g: g.n_atoms), ("edges", lambda g: g.n_edges),
        ("rings", lambda g: g.n_rings))}

    def old_graph(i):
        a0, a1 = off["atoms"][i:i + 2]
        e0, e1 = off["edges"][i:i + 2]
        r0, r1 = off["rings"][i:i + 2]
        ro = ring_atom_off[r0:r1 + 1]
        return MolGraph(V=np.array(old["V"][a0:a1]), E=np.array(old["E"][e0:e1]),
                        edge_index=np.ascontiguousarray(old["edges"][e0:e1].T),
                        edge_type=np.array(old["edge_type"][e0:e1]),
                        ring_atoms=np.array(old["ring_atoms"][ro[0]:ro[-1]]),
                        ring_offsets=(ro - ro[0]).astype(np.int32),
                        ring_system=np.array(old["ring_system"][r0:r1]),
                        fragment=np.array(old["fragment"][a0:a1]),
                        n_rounds=int(store.n_rounds[i]), has_rings=bool(store.has_rings[i]))

    rng = np.random.default_rng(0)
    groups = [rng.choice(len(store), size, replace=False) for _ in range(max(1, n // size))]
    runs = {"store_pack": lambda: [store.pack(r) for r in groups],
            "graphs_then_pack": lambda: [pack(store.graphs(r), store.targets[r], rows=r)
                                         for r in groups],
            "format1_graphs_then_pack": lambda: [
                pack([old_graph(i) for i in r], store.targets[r], rows=r) for r in groups]}
    best = dict.fromkeys(runs, float("inf"))
    for _ in range(rounds):
        for name, run in runs.items():
            t = time.perf_counter()
            run()
            best[name] = min(best[name], time.perf_counter() - t)
    m = len(groups) * size
    return {"molecules": m, "per_instance": size,
            "us_per_mol": {k: round(v / m * 1e6, 2) for k, v in best.items()},
            "load_avg_1min": round(os.getloadavg()[0], 2)}


def build_child(src: str, out: str, jobs: int) -> None:
    """Build the store in this fresh process; print its summary as JSON."""
    from molpipe.data.build import build_store

    summary = build_store(src, out, n_jobs=jobs)
    kib = 1024
    own, kids = (resource.getrusage(w) for w in (resource.RUSAGE_SELF, resource.RUSAGE_CHILDREN))
    print(json.dumps({
        "cpu_seconds_main": round(own.ru_utime + own.ru_stime, 1),
        "cpu_seconds_workers": round(kids.ru_utime + kids.ru_stime, 1),
        "rows_read": summary["rows_read"], "rows_kept": summary["rows_kept"],
        "rows_rejected": summary["rows_rejected"], "seconds": round(summary["seconds"], 1),
        "mols_per_s": round(summary["mols_per_s"]),
        "maxrss_largest_worker_mib": round(kids.ru_maxrss / kib, 1)}))


def preprocess(args) -> dict:
    """The preprocessing figure (see the module docstring)."""
    result = {}
    work = Path(tempfile.mkdtemp(prefix="molpipe-scale-", dir=args.tmp))
    try:
        src = moses_path()
        if args.n < MOSES_ROWS:
            src = moses_head(args.n, work / f"moses-{args.n}.csv.gz")
        runs = []
        for jobs in args.jobs:                     # e.g. 1 2 1 2: alternated against drift
            out = work / f"store-{jobs}"
            cmd = [sys.executable, str(SCRIPT), "build-child", str(src), str(out), str(jobs)]
            text, memory = run_sampled(cmd)
            run = {"jobs": jobs, **json.loads(text.strip().splitlines()[-1]), **memory}
            run["store_mib"] = round(sum(p.stat().st_size for p in out.iterdir()) / MIB, 1)
            run["rows_add_up"] = run["rows_read"] == run["rows_kept"] + run["rows_rejected"]
            runs.append(run)
            shutil.rmtree(out, ignore_errors=True)
            print(json.dumps(run), flush=True)
        result["build_store"] = runs
        best = {j: max(r["mols_per_s"] for r in runs if r["jobs"] == j) for j in set(args.jobs)}
        result["best_mols_per_s"] = {str(j): v for j, v in sorted(best.items())}
        if 1 in best and 2 in best:
            result["two_jobs_over_one"] = round(best[2] / best[1], 3)
            cpu = {j: min((r["cpu_seconds_main"] + r["cpu_seconds_workers"]) / r["rows_read"]
                          for r in runs if r["jobs"] == j) for j in (1, 2)}
            result["cpu_us_per_row"] = {str(j): round(v * 1e6, 1) for j, v in cpu.items()}
        result["rows"] = min(args.n, MOSES_ROWS)
        result["source"] = str(moses_path())
        if not args.skip_featurize:
            result["featurize_vs_parse"] = featurize_vs_parse(args.parse_n, args.rounds)
            print(json.dumps({"featurize_vs_parse": result["featurize_vs_parse"]}), flush=True)
            result["pack"] = pack_speed(args.parse_n, 32, args.rounds, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    return result


def add(sub) -> None:
    """The ``preprocess`` subcommand (and its hidden child)."""
    p = sub.add_parser("preprocess", help="featurize vs parse; build_store of MOSES")
    p.add_argument("--n", type=int, default=MOSES_ROWS, help="MOSES rows to build from")
    p.add_argument("--parse-n", type=int, default=20_000, help="SMILES for the parse ratio")
    p.add_argument("--rounds", type=int, default=5)
    p.add_argument("--skip-featurize", action="store_true",
                   help="only the builds (no parse ratio, no pack timing)")
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2],
                   help="builds to run, in this order (e.g. 1 2 1 2)")
    p.add_argument("--tmp", type=Path, default=Path(tempfile.gettempdir()))
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=preprocess)
    c = sub.add_parser("build-child")
    c.add_argument("src")
    c.add_argument("out")
    c.add_argument("jobs", type=int)
    c.set_defaults(run=lambda a: build_child(a.src, a.out, a.jobs))
