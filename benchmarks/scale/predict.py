"""``predict``: ``molpipe predict`` over the first ``--n`` rows of
``../shared/data/moses_train.csv.gz`` (all 1,584,663 without ``--n``) in a fresh child process
(``--jobs 2``), while this process samples the memory of its whole process tree from /proc:
molecules/s, peak RSS (and PSS) of the tree, rows predicted + rows failed == rows read; and,
in the same sitting, the featurize-only rate of the same rows through the same processes;
beside each, the CPU time of its process tree per molecule (steadier than the rate on a
shared machine).
``predict-costs``: where one core's time goes, per molecule, in each step of ``molpipe
predict`` (reading, parsing, featurizing, pickling, packing, the forward, the domain check,
writing), on the first ``--n`` rows. ``fingerprint``: ``molpipe fingerprint -o fp.npy`` the
same way as ``predict`` (molecules/s from the wall time, peak RSS, rows in the .npy == rows
read). ``evaluate``: ``molpipe evaluate`` on the store of the first ``--n`` MOSES rows
labelled with logP, ``--jobs 1`` and ``2`` (threads), peak RSS and molecules/s of each.
``predict-model``: the small model these use (Crippen logP of 20,000 MOSES rows, 2 epochs).

Run:  nice -n 5 python benchmarks/bench_scale.py predict-model
      nice -n 5 python benchmarks/bench_scale.py predict-costs --n 10000
      nice -n 5 python benchmarks/bench_scale.py predict --n 100000 [--jobs 2] [--json out.json]
      nice -n 5 python benchmarks/bench_scale.py predict          (the full file)
      nice -n 5 python benchmarks/bench_scale.py fingerprint --n 100000
      nice -n 5 python benchmarks/bench_scale.py evaluate --n 100000 [--jobs 1 2]
"""

from __future__ import annotations

import csv
import gzip
import io
import json
import os
import pickle
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from scale.common import MIB, ROOT, SCRIPT, _memory_kib, _tree, child_env, moses_path

_env = child_env


# -- predict: molpipe predict over MOSES, memory of the process tree ----------------------------

PREDICT_SCRATCH = Path(os.environ.get("MOLPIPE_SCALE_SCRATCH",
                                     Path(tempfile.gettempdir()) / "molpipe-scale")) / "predict"
#: the figure's model: logP of MOSES rows 200,001-220,000 (outside the first 100,000 that
#: the development runs predict), d_h 128, 2 epochs; its domain keeps 16,000 training
#: fingerprints (its training split), the realistic cost of the domain check
PREDICT_MODEL_ROWS = (200_000, 220_000)


def _moses_head(n: int | None, scratch: Path) -> Path:
    """The first ``n`` MOSES rows as a CSV in ``scratch`` (the whole .csv.gz for None)."""
    if n is None:
        return moses_path()
    out = scratch / f"moses-{n}.csv"
    if not out.is_file():
        tmp = out.with_name(out.name + ".tmp")
        with gzip.open(moses_path(), "rt", encoding="utf-8", newline="") as f, \
                open(tmp, "w", encoding="utf-8", newline="") as g:
            for i, line in enumerate(f):
                if i > n:
                    break
                g.write(line)
        os.replace(tmp, out)
    return out


def _label_logp(lo: int, hi: int, out: Path) -> Path:
    """MOSES data rows ``lo + 1 .. hi`` with their Crippen logP (empty where RDKit reads no
    molecule) as the CSV ``out`` (written once)."""
    from rdkit import Chem, RDLogger
    from rdkit.Chem import Crippen

    if out.is_file():
        return out
    out.parent.mkdir(parents=True, exist_ok=True)
    tmp = out.with_name(out.name + ".tmp")
    RDLogger.DisableLog("rdApp.*")
    with gzip.open(moses_path(), "rt", encoding="utf-8") as f, open(tmp, "w", newline="") as g:
        w = csv.writer(g, lineterminator="\n")
        w.writerow(["SMILES", "logp"])
        for i, line in enumerate(f):
            if i > hi:
                break
            if i > lo:
                s = line.strip()
                mol = Chem.MolFromSmiles(s)
                w.writerow([s, f"{Crippen.MolLogP(mol):.4f}" if mol is not None else ""])
    os.replace(tmp, out)
    return out


def predict_model(scratch: Path = PREDICT_SCRATCH) -> Path:
    """The figure's model (built once): Crippen logP of ``PREDICT_MODEL_ROWS``, 2 epochs."""
    run = scratch / "moses-logp-model"
    if (run / "model" / "config.json").is_file():
        return run
    data = _label_logp(*PREDICT_MODEL_ROWS, scratch / "moses-logp-20k.csv")
    subprocess.run([sys.executable, str(ROOT / "cli.py"), "train", str(data), "--epochs", "2",
                    "--out", str(run)], check=True, env=_env(), cwd=ROOT,
                   stdout=subprocess.DEVNULL)
    return run


def _count_rows(path: Path) -> int:
    """Data rows of a CSV (the header not counted), streamed."""
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "rt", encoding="utf-8", newline="") as f:
        return sum(1 for _ in csv.reader(f)) - 1


def _sample_tree(cmd: list[str], every: float = 0.5) -> dict:
    """Run ``cmd`` with its stderr captured, sampling the RSS and PSS of its process tree."""
    import resource

    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    proc = subprocess.Popen(cmd, env=_env(), cwd=ROOT, stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True)
    peak_rss = peak_pss = peak_parent = 0
    half = []                              # (seconds, RSS) to compare the halves of the run
    while proc.poll() is None:
        mem = [_memory_kib(p) for p in _tree(proc.pid)]
        rss, pss = sum(m[0] for m in mem), sum(m[1] for m in mem)
        peak_rss, peak_pss = max(peak_rss, rss), max(peak_pss, pss)
        peak_parent = max(peak_parent, mem[0][0] if mem else 0)
        half.append((time.perf_counter() - t0, rss))
        time.sleep(every)
    out, err = proc.communicate()
    if proc.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed ({proc.returncode}): {err[-2000:]}")
    seconds = time.perf_counter() - t0
    after = resource.getrusage(resource.RUSAGE_CHILDREN)         # the tree's, once waited for
    cpu = (after.ru_utime + after.ru_stime) - (before.ru_utime + before.ru_stime)
    first = [r for t, r in half if t < seconds / 2]
    second = [r for t, r in half if t >= seconds / 2]
    return {"wall_seconds": round(seconds, 1), "cpu_seconds": round(cpu, 1), "stdout": out,
            "peak_rss_mib": round(peak_rss / 1024, 1), "peak_pss_mib": round(peak_pss / 1024, 1),
            "peak_parent_rss_mib": round(peak_parent / 1024, 1),
            "peak_rss_first_half_mib": round(max(first, default=0) / 1024, 1),
            "peak_rss_second_half_mib": round(max(second, default=0) / 1024, 1)}


def _featurize_chunk(min_rounds: int, max_rounds: int, items: list) -> int:
    """(worker) Featurize a chunk as ``Predictor.featurize`` does; how many rows failed."""
    from molpipe.chem.featurize import featurize

    failed = 0
    for item in items:
        try:
            featurize(item, min_rounds=min_rounds, max_rounds=max_rounds)
        except Exception:
            failed += 1
    return failed


def _featurize_only(input: str, jobs: int, chunk_size: int) -> None:
    """(child) Featurize every row of ``input`` as ``molpipe predict`` reads and spreads them
    (same reader, chunks and processes), nothing else; print rows, failed and molecules/s."""
    import itertools

    from molpipe.inference.files import map_chunks, open_input

    t0 = time.perf_counter()
    source = open_input(input)
    rows = failed = 0

    def chunks():
        nonlocal rows
        while chunk := [item for _, item in itertools.islice(source.rows, chunk_size)]:
            rows += len(chunk)
            yield chunk

    for n in map_chunks(_featurize_chunk, (2, 6), chunks(), jobs, "featurizing"):
        failed += n
    seconds = time.perf_counter() - t0
    print(json.dumps({"rows": rows, "failed": failed, "seconds": seconds,
                      "molecules_per_second": rows / seconds}))


def bench_predict(model: Path, n: int | None, jobs: int, scratch: Path,
                  chunk_size: int | None = None) -> dict:
    """``molpipe predict`` over the first ``n`` MOSES rows (all for None) in a fresh process,
    memory sampled; then the featurize-only rate of the same rows, the same way."""
    from molpipe.inference.predict import CHUNK

    chunk_size = chunk_size or CHUNK
    scratch.mkdir(parents=True, exist_ok=True)
    src = _moses_head(n, scratch)
    out = scratch / f"predictions-{n or 'all'}.csv"
    load = open("/proc/loadavg").read().split()[:3]
    cmd = [sys.executable, str(ROOT / "cli.py"), "predict", "--model", str(model), "-i",
           str(src), "-o", str(out), "--overwrite", "--jobs", str(jobs),
           "--chunk-size", str(chunk_size), "--json"]
    run = _sample_tree(cmd)
    summary = json.loads(run.pop("stdout"))
    rows_read = _count_rows(src)
    with open(out, newline="", encoding="utf-8") as f:
        written = errors = 0
        for row in csv.DictReader(f):
            written += 1
            errors += bool(row["error"])
    feat = _sample_tree([sys.executable, str(SCRIPT), "featurize-only",
                         str(src), "--jobs", str(jobs), "--chunk-size", str(chunk_size)])
    feat_summary = json.loads(feat.pop("stdout"))
    out.unlink()
    return {
        "figure": "predict", "input": str(src), "model": str(model), "jobs": jobs,
        "chunk_size": chunk_size, "rows_read": rows_read, "rows_written": written,
        "rows_predicted": written - errors, "rows_with_errors": errors,
        "every_row_accounted": written == rows_read == summary["rows"],
        "out_of_domain": summary.get("out_of_domain"),
        "max_rows_in_flight": summary.get("max_rows_in_flight"),
        "molecules_per_second": round(summary["molecules_per_second"], 1),
        "command_seconds": round(summary["seconds"], 1), **run,
        "cpu_microseconds_per_molecule": round(run["cpu_seconds"] / rows_read * 1e6),
        "featurize_only_molecules_per_second": round(feat_summary["molecules_per_second"], 1),
        "featurize_only_cpu_microseconds_per_molecule": round(
            feat["cpu_seconds"] / rows_read * 1e6),
        "featurize_only_peak_rss_mib": feat["peak_rss_mib"],
        "loadavg_before": load, "loadavg_after": open("/proc/loadavg").read().split()[:3],
    }


def bench_fingerprint(model: Path, n: int | None, jobs: int, scratch: Path) -> dict:
    """``molpipe fingerprint -o fp.npy`` over the first ``n`` MOSES rows (all for None) in a
    fresh process, memory sampled; rows in the .npy and in its errors file."""
    import numpy as np

    scratch.mkdir(parents=True, exist_ok=True)
    src = _moses_head(n, scratch)
    out = scratch / f"fingerprints-{n or 'all'}.npy"
    errors = out.with_name(out.stem + ".errors.csv")
    load = open("/proc/loadavg").read().split()[:3]
    run = _sample_tree([sys.executable, str(ROOT / "cli.py"), "fingerprint", "--model",
                        str(model), "-i", str(src), "-o", str(out), "--overwrite", "--jobs",
                        str(jobs)])
    run.pop("stdout")
    F = np.load(out, mmap_mode="r")
    with open(errors, newline="", encoding="utf-8") as f:
        failed = sum(1 for _ in csv.reader(f)) - 1
    rows_read = _count_rows(src)
    result = {"figure": "fingerprint", "input": str(src), "model": str(model), "jobs": jobs,
              "rows_read": rows_read, "rows_in_npy": int(F.shape[0]), "width": int(F.shape[1]),
              "rows_with_errors": failed, "every_row_accounted": F.shape[0] == rows_read,
              "npy_mib": round(out.stat().st_size / MIB, 1),
              "molecules_per_second": round(rows_read / run["wall_seconds"], 1), **run,
              "loadavg_before": load, "loadavg_after": open("/proc/loadavg").read().split()[:3]}
    del F
    out.unlink()
    errors.unlink()
    return result


# -- evaluate: molpipe evaluate on a labelled MOSES store -------------------------------------

def bench_evaluate(model: Path, n: int, scratch: Path, jobs: tuple[int, ...] = (1, 2)) -> dict:
    """``molpipe evaluate --model MODEL STORE`` on the store of the first ``n`` MOSES rows
    labelled with logP (built once), each ``--jobs`` in a fresh process, memory sampled."""
    store = scratch / f"moses-logp-{n}-store"
    if not (store / "meta.json").is_file():
        data = _label_logp(0, n, scratch / f"moses-logp-{n}.csv")
        subprocess.run([sys.executable, str(ROOT / "cli.py"), "preprocess", str(data), "-o",
                        str(store), "--target", "logp", "--jobs", "2"], check=True,
                       env=_env(), cwd=ROOT, stdout=subprocess.DEVNULL)
    runs = []
    for j in jobs:
        load = open("/proc/loadavg").read().split()[:3]
        run = _sample_tree([sys.executable, str(ROOT / "cli.py"), "evaluate", "--model",
                            str(model), str(store), "--json", "--jobs", str(j)])
        result = json.loads(run.pop("stdout"))
        runs.append({"jobs": j, "rows": result["rows"], "summary": result["summary"],
                     "molecules_per_second": round(result["rows"] / run["wall_seconds"], 1),
                     **run, "loadavg_before": load})
    return {"figure": "evaluate", "store": str(store), "model": str(model), "runs": runs,
            "loadavg_after": open("/proc/loadavg").read().split()[:3]}


# -- predict-costs: one core's time per molecule, step by step ----------------------------------

def predict_costs(model: Path, n: int, scratch: Path) -> dict:
    """µs per molecule of each step of ``molpipe predict`` on one core (this process)."""
    import numpy as np

    from molpipe.chem.featurize import featurize, parse_smiles
    from molpipe.data.instance import pack_by_plan
    from molpipe.inference.files import open_input, output_columns
    from molpipe.inference.predict import BATCH, CHUNK, Predictor
    from molpipe.kernels import one_blas_thread

    src = _moses_head(n, scratch)
    predictor = Predictor.load(model)
    t: dict = {}

    def timed(name, fn):
        t0 = time.perf_counter()
        value = fn()
        t[name] = round((time.perf_counter() - t0) / n * 1e6, 2)
        return value

    with one_blas_thread():
        predictor.predict_all(["CCO", "c1ccccc1"])           # compile, warm up
        source = open_input(src)
        rows = timed("read", lambda: list(source.rows))
        items = [item for _, item in rows]
        mols = timed("parse", lambda: [parse_smiles(s) for s in items])
        graphs = timed("featurize_from_mol", lambda: [featurize(m) for m in mols])
        timed("pickle_smiles_to_worker", lambda: [
            pickle.loads(pickle.dumps(items[i:i + CHUNK])) for i in range(0, n, CHUNK)])
        timed("pickle_graphs", lambda: pickle.loads(pickle.dumps(graphs)))
        Y = np.full((len(graphs), len(predictor.targets)), np.nan)
        packed = timed("pack", lambda: pack_by_plan(graphs, Y, BATCH))
        timed("forward", lambda: [predictor.predict_instance(i) for i, _ in packed])
        if predictor.domain is not None:
            from molpipe.chem.domain import fingerprints, nearest_similarity

            fps = timed("domain_fingerprints", lambda: fingerprints(mols))
            timed("domain_similarity", lambda: nearest_similarity(fps, predictor.domain.fps))
            timed("domain_check_all", lambda: predictor.domain.check(mols, graphs))
        P, S, errors, domain = timed("predict_all_chunks", lambda: [
            predictor.predict_all(items[i:i + CHUNK]) for i in range(0, n, CHUNK)])[-1]
        header, keep = output_columns(source.columns, predictor.targets, domain is not None)

        def write():
            buf = io.StringIO()
            w = csv.writer(buf, lineterminator="\n")
            for f, _ in rows:
                w.writerow([f[i] for i in keep] + ["1.2345678"] + [""] * (domain is not None) * 3)
        timed("write", write)
    return {"figure": "predict-costs", "rows": n, "model": str(model),
            "reference_fingerprints": (None if predictor.domain is None
                                       else len(predictor.domain.fps)),
            "microseconds_per_molecule": t,
            "loadavg": open("/proc/loadavg").read().split()[:3]}


def _with_model(run):
    """``run(args, model)`` with ``--model``, or predict-model's (built if missing)."""
    return lambda a: run(a, a.model or predict_model(a.scratch))


def add(sub) -> None:
    """The ``predict``, ``predict-costs``, ``fingerprint``, ``evaluate`` and ``predict-model``
    subcommands (and the hidden featurize-only child)."""
    p = sub.add_parser("predict", help="molpipe predict over MOSES: molecules/s, peak RSS")
    p.add_argument("--model", type=Path, default=None,
                   help="run directory (default: predict-model's, built if missing)")
    p.add_argument("--n", type=int, default=None, help="first rows only (default: all)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=None)
    p.add_argument("--scratch", type=Path, default=PREDICT_SCRATCH)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=_with_model(lambda a, m: bench_predict(m, a.n, a.jobs, a.scratch,
                                                             a.chunk_size)))
    p = sub.add_parser("predict-costs", help="µs per molecule of every step of predict")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--n", type=int, default=10_000)
    p.add_argument("--scratch", type=Path, default=PREDICT_SCRATCH)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=_with_model(lambda a, m: predict_costs(m, a.n, a.scratch)))
    p = sub.add_parser("fingerprint", help="molpipe fingerprint over MOSES: molecules/s, RSS")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--n", type=int, default=None, help="first rows only (default: all)")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--scratch", type=Path, default=PREDICT_SCRATCH)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=_with_model(lambda a, m: bench_fingerprint(m, a.n, a.jobs, a.scratch)))
    p = sub.add_parser("evaluate", help="molpipe evaluate on a labelled MOSES store")
    p.add_argument("--model", type=Path, default=None)
    p.add_argument("--n", type=int, default=100_000)
    p.add_argument("--jobs", type=int, nargs="+", default=[1, 2])
    p.add_argument("--scratch", type=Path, default=PREDICT_SCRATCH)
    p.add_argument("--json", type=Path, default=None)
    p.set_defaults(run=_with_model(lambda a, m: bench_evaluate(m, a.n, a.scratch,
                                                              tuple(a.jobs))))
    p = sub.add_parser("predict-model", help="train the predict figure's model")
    p.add_argument("--scratch", type=Path, default=PREDICT_SCRATCH)
    p.set_defaults(run=lambda a: {"model": str(predict_model(a.scratch))})
    p = sub.add_parser("featurize-only")
    p.add_argument("input")
    p.add_argument("--jobs", type=int, default=2)
    p.add_argument("--chunk-size", type=int, default=1024)
    p.set_defaults(run=lambda a: _featurize_only(a.input, a.jobs, a.chunk_size))
