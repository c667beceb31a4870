"""Long asynchronous run under load: memory stays flat, every instance completes once, no slowdown.

    nice -n 10 python -m benchmarks.bench_load            # >= 100,000 instance passes, mak 64
    python -m benchmarks.bench_load --quick               # a short check (~10 s)

QM9-subset molecules, one per instance (small instances), hidden 32, async schedule,
``--mak`` instances in flight, repeated in passes of ``--chunk`` instances with keys unique
over the whole run. A sampler thread reads the process RSS every 0.2 s. Reports RSS at the
start/end/peak, RSS growth over the second half, whether every key completed exactly once,
the instances left cached in any stage, and throughput of the first vs the last 10 % of
passes. Writes benchmarks/results/load.json (load-quick.json with --quick).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
PAGE = os.sysconf("SC_PAGE_SIZE")


def rss_mb() -> float:
    with open("/proc/self/statm") as f:
        return int(f.read().split()[1]) * PAGE / 2**20


class Sampler(threading.Thread):
    """(seconds, RSS MiB) every ``period`` seconds until stopped."""

    def __init__(self, period: float = 0.2):
        super().__init__(daemon=True, name="rss-sampler")
        self.period, self.samples, self._halt = period, [], threading.Event()
        self.t0 = time.perf_counter()

    def run(self) -> None:
        while not self._halt.is_set():
            self.samples.append((time.perf_counter() - self.t0, rss_mb()))
            self._halt.wait(self.period)

    def stop(self) -> list:
        self._halt.set()
        self.join()
        return self.samples


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--quick", action="store_true", help="10,000 instance passes")
    ap.add_argument("--passes", type=int, default=100_000, help="instance passes in all")
    ap.add_argument("--chunk", type=int, default=2_000, help="instances per run() call")
    ap.add_argument("--mak", type=int, default=64)
    ap.add_argument("--muf", type=int, default=4)
    ap.add_argument("--hidden", type=int, default=32)
    args = ap.parse_args()
    if args.quick:
        args.passes = 10_000

    from molpipe.data.instance import pack
    from molpipe.training.engines import make_engine, make_optimizers
    from molpipe.nn.network import NetworkConfig, build_network
    from molpipe.training.settings import TrainConfig
    from molpipe.training.session import prepare

    prep = prepare(TrainConfig(data="qm9"))
    store = prep.store
    rows = prep.split["train"][: args.chunk]
    insts = [pack([g], store.targets[[r]], rows=np.array([r]))
             for g, r in zip(store.graphs(rows), rows)]
    Y = store.targets[prep.split["train"]]
    std = np.nanstd(Y, 0)
    net = build_network(NetworkConfig(hidden=args.hidden), store.atom_dim, store.bond_dim,
                        Y.shape[1], np.nanmean(Y, 0), np.where(std > 0, std, 1.0), 0)
    n_chunks = -(-args.passes // args.chunk)
    sampler = Sampler()
    rate, losses, completed, duplicates, missing = [], [], 0, 0, 0
    seen: set = set()
    rss_start = rss_mb()
    sampler.start()
    t_start = time.perf_counter()
    with make_engine("async", net, make_optimizers(net, 1e-4), max_active_keys=args.mak,
                     min_update_frequency=args.muf, stall_timeout=60.0) as engine:
        for c in range(n_chunks):
            items = [(c * args.chunk + i, inst) for i, inst in enumerate(insts)]
            res = engine.train(items)
            keys = [k for k, _ in items]
            done = list(res.losses)
            duplicates += len(done) - len(set(done)) + len(seen & set(done))
            missing += len(set(keys) - set(done))
            seen.update(done)
            completed += len(done)
            rate.append(len(items) / res.seconds)
            losses.append(float(np.nanmean(list(res.losses.values()))))
            if c % max(1, n_chunks // 10) == 0 or c == n_chunks - 1:
                print(f"pass {c + 1}/{n_chunks}: {rate[-1]:,.0f} instances/s, loss {losses[-1]:.3f}, "
                      f"RSS {rss_mb():.0f} MiB", flush=True)
        workers = engine.pipeline.workers
        leaked = sum(s.n_cached for s in net.stages.values())
        pending = sum(len(w._version_at_fwd) for w in workers)
    wall = time.perf_counter() - t_start
    samples = sampler.stop()
    rss = np.array([m for _, m in samples])
    half = rss[len(rss) // 2:]
    tenth = max(1, n_chunks // 10)
    # the first pass loads numba's cache and warms up: "first 10 %" starts after it
    first = float(np.mean(rate[1:1 + tenth] if n_chunks > 1 else rate[:1]))
    last = float(np.mean(rate[-tenth:]))
    result = {
        "command": "python -m benchmarks.bench_load " + " ".join(sys.argv[1:]),
        "config": {"data": "qm9 subset, 1 molecule per instance", "hidden": args.hidden,
                   "max_active_keys": args.mak, "min_update_frequency": args.muf,
                   "instances_per_pass": args.chunk, "passes": n_chunks},
        "instance_passes": completed,
        "every_instance_once": completed == n_chunks * args.chunk and not duplicates and not missing,
        "duplicates": duplicates, "missing": missing,
        "cached_left_in_stages": leaked, "forward_records_left": pending,
        "rss_mib": {"before_start": round(rss_start, 1), "start": round(float(rss[0]), 1),
                    "end": round(float(rss[-1]), 1), "peak": round(float(rss.max()), 1),
                    "second_half_growth": round(float(half[-1] - half[0]), 1),
                    "samples": len(rss)},
        "instances_per_second": {"warm_up_pass": round(rate[0], 1), "first_10pct": round(first, 1), "last_10pct": round(last, 1),
                                 "last_over_first": round(last / first, 3),
                                 "overall": round(completed / wall, 1)},
        "loss": {"first_pass": losses[0], "last_pass": losses[-1]},
        "wall_seconds": round(wall, 1),
    }
    result["verdict"] = {
        "memory_flat": result["rss_mib"]["second_half_growth"] < 50,
        "exactly_once": result["every_instance_once"] and leaked == 0 and pending == 0,
        "no_throughput_decay": last / first > 0.8,
    }
    out = ROOT / "benchmarks/results" / ("load-quick.json" if args.quick else "load.json")
    out.parent.mkdir(parents=True, exist_ok=True)
    out.write_text(json.dumps(result, indent=2))
    print(json.dumps(result, indent=2))


if __name__ == "__main__":
    main()
