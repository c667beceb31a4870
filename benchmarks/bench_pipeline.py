"""Pipeline figures: packing knee, mak x muf sweep, convergence and time to accuracy (ESOL).

    python benchmarks/bench_pipeline.py knee        # molecules per instance vs molecules/s
    python benchmarks/bench_pipeline.py sweep       # mak in 1..16 x muf in 1,4,16: mol/s, RMSE
    python benchmarks/bench_pipeline.py converge    # reference vs async: RMSE, time to accuracy
    python benchmarks/bench_pipeline.py overhead [--one-core]   # pipeline cost, one in flight
    python benchmarks/bench_pipeline.py placement   # stages per worker vs molecules/s
    python benchmarks/bench_pipeline.py loop        # train(): seconds per epoch outside training

Results go to ``benchmarks/results/pipeline-<what>.json`` and a markdown table to stdout.
Throughput figures come from ``molpipe.measure.bench`` (all schedules in one process) or from the
training runs' own ``train_molecules_per_second`` (training time only, no validation).
"""

from __future__ import annotations

import argparse
import csv
import json
import tempfile
from pathlib import Path

import numpy as np

from molpipe.measure.bench import BenchConfig, bench
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train

CHEMPROP_ESOL_RMSE, CHEMPROP_ESOL_SECONDS = 0.664, 89.0
RESULTS = Path("benchmarks/results")


def knee(data: str) -> dict:
    rows = {}
    for size in (1, 2, 4, 8, 16, 32, 64):
        r = bench(BenchConfig(data=data, molecules_per_instance=size, schedules=("reference", "async")))
        rows[size] = {s: r[s]["molecules_per_second"] for s in ("reference", "async")}
        print(f"| {size} | {rows[size]['reference']:.0f} | {rows[size]['async']:.0f} | "
              f"{rows[size]['async'] / rows[size]['reference']:.2f} |", flush=True)
    return rows


def _run(**kw) -> tuple[dict, list[dict]]:
    with tempfile.TemporaryDirectory() as tmp:
        report = train(TrainConfig(**kw), tmp)
        history = list(csv.DictReader(open(Path(tmp) / "metrics.csv")))
    return report, history


def sweep(data: str) -> dict:
    rows = {}
    for mak in (1, 2, 4, 8, 16):
        for muf in (1, 4, 16):
            report, _ = _run(data=data, max_active_keys=mak, min_update_frequency=muf)
            (m,) = report["test"].values()
            rows[f"{mak},{muf}"] = {"mak": mak, "muf": muf, "rmse": m["rmse"],
                                    "molecules_per_second": report["train_molecules_per_second"],
                                    "wall_seconds": report["wall_seconds"],
                                    "epochs": report["epochs"]}
            print(f"| {mak} | {muf} | {report['train_molecules_per_second']:.0f} | {m['rmse']:.3f} | "
                  f"{report['wall_seconds']:.1f} |", flush=True)
    return rows


def _first_time(history: list[dict], column: str, threshold: float) -> float | None:
    for h in history:
        if float(h[column]) <= threshold:
            return float(h["wall_seconds"])
    return None


def converge(data: str, seeds: list[int], async_epochs: int = 50, mak: int = 4) -> dict:
    """Reference (50 epochs) against async (``async_epochs``: async is faster per epoch, so it
    may spend more epochs and still finish first; ``mak`` instances in flight), both at their
    defaults otherwise."""
    out = {}
    for seed in seeds:
        ref, ref_h = _run(data=data, seed=seed, schedule="reference", track_test=True)
        asy, asy_h = _run(data=data, seed=seed, schedule="async", track_test=True,
                          epochs=async_epochs, max_active_keys=mak)
        (t,) = ref["test"]
        ref_val = float(ref_h[ref["best_epoch"] - 1][f"val_{t}_rmse"])
        row = {
            "reference_rmse": ref["test"][t]["rmse"], "async_rmse": asy["test"][t]["rmse"],
            "async_epochs": asy["epochs"],
            "reference_wall": ref["wall_seconds"], "async_wall": asy["wall_seconds"],
            "async_seconds_to_chemprop_rmse": _first_time(asy_h, f"test_{t}_rmse", CHEMPROP_ESOL_RMSE),
            "reference_seconds_to_chemprop_rmse": _first_time(ref_h, f"test_{t}_rmse", CHEMPROP_ESOL_RMSE),
            "reference_best_val_rmse": ref_val,
            "reference_final_val_rmse": float(ref_h[-1][f"val_{t}_rmse"]),
            "async_seconds_to_reference_final_val": _first_time(
                asy_h, f"val_{t}_rmse", float(ref_h[-1][f"val_{t}_rmse"])),
            "reference_seconds_to_its_best_val": _first_time(ref_h, f"val_{t}_rmse", ref_val),
            "async_seconds_to_reference_best_val": _first_time(asy_h, f"val_{t}_rmse", ref_val),
        }
        for split in ("val", "test"):
            for name, hist in (("reference", ref_h), ("async", asy_h)):
                row[f"{name}_{split}_curve"] = [[float(h["wall_seconds"]), float(h[f"{split}_{t}_rmse"])]
                                                for h in hist]
        out[seed] = row
        print(f"seed {seed}: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} never"
                                            for k, v in row.items() if "curve" not in k), flush=True)
    scalars = [k for k in next(iter(out.values())) if "curve" not in k]
    mean = {k: float(np.mean([r[k] for r in out.values() if r[k] is not None] or [np.nan]))
            for k in scalars}
    # the seeds' mean validation curves (epoch by epoch; wall time averaged too): when does
    # async's mean curve first reach the reference's mean final validation RMSE?
    n_ep = min(len(r["async_val_curve"]) for r in out.values())
    curve = np.mean([np.array(r["async_val_curve"][:n_ep]) for r in out.values()], axis=0)
    hit = np.flatnonzero(curve[:, 1] <= mean["reference_final_val_rmse"])
    mean["async_mean_curve_seconds_to_reference_final_val"] = float(curve[hit[0], 0]) if hit.size else None
    mean["async_mean_final_val_rmse"] = float(curve[-1, 1])
    # the same for the test split, scored every epoch with the model of that epoch (the test
    # RMSE above is the best-on-validation model's): is a gap at the last epoch on both splits?
    for name in ("reference", "async"):
        mean[f"{name}_mean_final_test_rmse"] = float(np.mean([r[f"{name}_test_curve"][-1][1]
                                                             for r in out.values()]))
    mean["async_vs_reference_rmse"] = mean["async_rmse"] / mean["reference_rmse"] - 1
    # is a gap more than the seeds' scatter? async minus reference, seed by seed (each seed
    # has its own split, shared by both), with the standard error of that mean difference
    for split in ("val", "test"):
        diff = np.array([r[f"async_{split}_curve"][-1][1] - r[f"reference_{split}_curve"][-1][1]
                         for r in out.values()])
        mean[f"final_{split}_async_minus_reference"] = float(diff.mean())
        mean[f"final_{split}_async_minus_reference_stderr"] = (
            float(diff.std(ddof=1) / np.sqrt(diff.size)) if diff.size > 1 else None)
    for k in scalars:
        if "seconds_to" in k:       # over the seeds that got there; how many did:
            mean[k.replace("seconds_to", "seeds_reaching")] = sum(r[k] is not None for r in out.values())
    out["mean"] = mean
    print("mean: " + ", ".join(f"{k} {v:.3f}" if v is not None else f"{k} never"
                               for k, v in mean.items()))
    return out


PLACEMENTS = {
    "one worker per stage (default)": None,
    "two workers": "embed,message,readout/update,rings,loss",
    "two workers, light stages swapped": "message,rings,loss/embed,update,readout",
    "three workers": "message/update/embed,rings,readout,loss",
}


def placement(data: str) -> dict:
    """async / reference for each placement, each from its own ``molpipe bench`` run."""
    rows = {}
    for name, text in PLACEMENTS.items():
        r = bench(BenchConfig(data=data, schedules=("reference", "async"), placement=text))
        rows[name] = {"placement": text, "reference": r["reference"]["molecules_per_second"],
                      "async": r["async"]["molecules_per_second"],
                      "async_vs_reference": r["async"]["speedup_vs_reference"]}
        print(f"| {name} | `{text or '-'}` | {rows[name]['reference']:,.0f} | "
              f"{rows[name]['async']:,.0f} | {rows[name]['async_vs_reference']:.2f} |", flush=True)
    return rows


def _thread_cpu() -> dict[str, float]:
    """CPU seconds (user + system) of every thread of this process, by thread name (Linux)."""
    import os
    import threading

    names = {t.native_id: t.name for t in threading.enumerate()}
    tick = os.sysconf("SC_CLK_TCK")
    out: dict[str, float] = {}
    for tid in os.listdir("/proc/self/task"):
        try:
            with open(f"/proc/self/task/{tid}/stat") as f:
                fields = f.read().rsplit(")", 1)[1].split()
        except OSError:                        # the thread ended meanwhile
            continue
        name = names.get(int(tid), "other")
        out[name] = out.get(name, 0.0) + (int(fields[11]) + int(fields[12])) / tick
    return out


def overhead(data: str, one_core: bool, passes: int = 6) -> dict:
    """CPU and wall time per molecule: the reference trainer against the async pipeline with
    one instance in flight (``max_active_keys=1``: the same arithmetic, nothing overlaps) and
    at the default mak 4, taking turns pass by pass. ``one_core`` pins the process (and so
    every worker thread) to CPU 0: what is left is the pipeline's own work (messages, queues,
    caches); the difference to two cores is what moving between cores costs. Every thread's
    CPU time is read from /proc, so the pipeline's cost is also split by worker (stage) and
    the control node, against the reference's own time in those stages."""
    import os
    import time

    from molpipe.data.instance import auto_instance_size
    from molpipe.training.engines import make_engine, make_optimizers
    from molpipe.nn.network import NetworkConfig, build_network
    from molpipe.training.session import make_items, prepare

    if one_core:
        os.sched_setaffinity(0, {min(os.sched_getaffinity(0))})
    prep = prepare(TrainConfig(data=data))
    rows = prep.split["train"]
    size = auto_instance_size(prep.store.n_atoms[rows])
    items, _, _ = make_items(prep, rows, size, np.random.default_rng(0), 0)
    n_t = len(prep.targets)
    engines = {}
    for name, schedule, mak in (("reference", "reference", 1), ("async-mak1", "async", 1),
                                ("async-mak4", "async", 4)):
        net = build_network(NetworkConfig(hidden=128, task=prep.task), prep.store.atom_dim,
                            prep.store.bond_dim, n_t, np.zeros(n_t), np.ones(n_t), 0)
        engines[name] = make_engine(schedule, net, make_optimizers(net, 1e-4),
                                    max_active_keys=mak, weight_stashing=True).__enter__()
        engines[name].train(items[:8])
    # the reference's time inside each stage's forward and backward (its own thread only)
    in_stage: dict[str, float] = {}
    ref_stages = set(engines["reference"].network.stages.values())

    def timed(method):
        def call(self, *args):
            t = time.thread_time()
            try:
                return method(self, *args)
            finally:
                if self in ref_stages:
                    in_stage[self.name] = in_stage.get(self.name, 0.0) + time.thread_time() - t
        return call

    originals = {(cls, m): getattr(cls, m) for cls in {type(st) for st in ref_stages}
                 for m in ("forward", "backward")}
    for (cls, method), fn in originals.items():
        setattr(cls, method, timed(fn))
    wall = {k: 0.0 for k in engines}
    cpu = {k: 0.0 for k in engines}
    threads: dict[str, dict[str, float]] = {k: {} for k in engines}
    for _ in range(passes):
        for name, engine in engines.items():
            w, c, before = time.perf_counter(), time.process_time(), _thread_cpu()
            engine.train(items)
            wall[name] += time.perf_counter() - w
            cpu[name] += time.process_time() - c
            for thread, t in _thread_cpu().items():
                threads[name][thread] = threads[name].get(thread, 0.0) + t - before.get(thread, 0.0)
    for (cls, method), fn in originals.items():          # undo the timing wrappers
        setattr(cls, method, fn)
    n = passes * len(rows)
    out = {name: {"molecules_per_second": n / wall[name], "cpu_us_per_molecule": cpu[name] / n * 1e6,
                  "cpu_vs_reference": cpu[name] / cpu["reference"],
                  "speed_vs_reference": wall["reference"] / wall[name],
                  "cores_busy": cpu[name] / wall[name]} for name in engines}
    print(f"{'one core' if one_core else 'all cores'} ({os.sched_getaffinity(0)}), "
          f"{size} molecules per instance:")
    for name, r in out.items():
        print(f"  {name:11s} {r['molecules_per_second']:7,.0f} mol/s  ×{r['speed_vs_reference']:.2f}  "
              f"CPU {r['cpu_us_per_molecule']:5.0f} µs/mol (×{r['cpu_vs_reference']:.2f}), "
              f"{r['cores_busy']:.2f} cores busy")
    # CPU µs per molecule by thread: each worker against the reference's time in its stages
    ref_total = sum(in_stage.values())
    print("  CPU µs/molecule by thread (async-mak4) | reference, inside those stages:")
    by_thread = {}
    for wid, worker in enumerate(engines["async-mak4"].pipeline.workers):
        stages = list(worker.stages)
        mine = threads["async-mak4"].get(f"molpipe-worker-{wid}", 0.0) / n * 1e6
        ref = sum(in_stage.get(st, 0.0) for st in stages) / n * 1e6
        by_thread["+".join(stages)] = {"async_mak4": mine, "reference_in_stages": ref}
        print(f"    {'+'.join(stages):22s} {mine:6.0f} | {ref:6.0f}  (×{mine / max(ref, 1e-9):.2f})")
    control = threads["async-mak4"].get("MainThread", 0.0) / n * 1e6
    ref_rest = (cpu["reference"] - ref_total) / n * 1e6
    by_thread["control node"] = {"async_mak4": control, "reference_outside_stages": ref_rest}
    print(f"    {'control node':22s} {control:6.0f} | reference outside stage calls (updates, "
          f"checks, loop) {ref_rest:.0f}")
    out["async-mak4"]["cpu_us_per_molecule_by_thread"] = by_thread
    for engine in engines.values():
        engine.__exit__(None, None, None)
    return out


def loop(data: str, seed: int, epochs: int = 20) -> dict:
    """``train()`` of each schedule: seconds per epoch inside the training passes and outside
    them (packing the epoch's instances, validation, checkpoints), epochs 2..N."""
    rows = {}
    for schedule in ("reference", "async"):
        _, history = _run(data=data, seed=seed, epochs=epochs, patience=epochs, schedule=schedule)
        inside = sum(float(h["epoch_seconds"]) for h in history[1:]) / (len(history) - 1)
        wall = (float(history[-1]["wall_seconds"]) - float(history[0]["wall_seconds"])) / (len(history) - 1)
        rows[schedule] = {"epoch_wall_seconds": wall, "training_seconds": inside,
                          "outside_training_seconds": wall - inside}
        print(f"| {schedule} | {wall:.3f} | {inside:.3f} | {wall - inside:.3f} "
              f"({(wall - inside) / wall:.0%}) |", flush=True)
    ref, asy = rows["reference"], rows["async"]
    rows["reference_over_async"] = {"epoch_wall": ref["epoch_wall_seconds"] / asy["epoch_wall_seconds"],
                                    "training": ref["training_seconds"] / asy["training_seconds"]}
    print(f"reference / async: epoch wall {rows['reference_over_async']['epoch_wall']:.2f}, "
          f"training {rows['reference_over_async']['training']:.2f}")
    return rows


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("what", choices=("knee", "sweep", "converge", "overhead", "placement", "loop"))
    ap.add_argument("--one-core", action="store_true", help="overhead: pin to one CPU")
    ap.add_argument("--data", default="esol")
    ap.add_argument("--seeds", nargs="+", type=int, default=[0, 1, 2])
    ap.add_argument("--async-epochs", type=int, default=50, help="converge: epochs of the async run")
    ap.add_argument("--mak", type=int, default=4, help="converge: instances in flight of the async run")
    args = ap.parse_args()
    RESULTS.mkdir(parents=True, exist_ok=True)
    if args.what == "knee":
        print("| molecules/instance | reference mol/s | async mol/s | async/reference |\n| --- | --- | --- | --- |")
        result = knee(args.data)
    elif args.what == "sweep":
        print("| mak | muf | async training mol/s | test RMSE | wall s |\n| --- | --- | --- | --- | --- |")
        result = sweep(args.data)
    elif args.what == "placement":
        print("| placement | `--placement` | reference mol/s | async mol/s | async/reference |\n"
              "| --- | --- | --- | --- | --- |")
        result = placement(args.data)
    elif args.what == "overhead":
        result = overhead(args.data, args.one_core)
    elif args.what == "loop":
        print("| schedule | epoch wall s | training s | outside training s |\n| --- | --- | --- | --- |")
        result = loop(args.data, args.seeds[0])
    else:
        result = converge(args.data, args.seeds, args.async_epochs, args.mak)
    suffix = f"-{args.async_epochs}" if args.what == "converge" and args.async_epochs != 50 else ""
    suffix += f"-mak{args.mak}" if args.what == "converge" and args.mak != 4 else ""
    suffix += "-one-core" if args.what == "overhead" and args.one_core else ""
    (RESULTS / f"pipeline-{args.what}-{args.data}{suffix}.json").write_text(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
