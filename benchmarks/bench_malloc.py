"""Page faults and speed of the reference and async trainers with and without molpipe's mallopt.

    python benchmarks/bench_malloc.py [--data esol] [--rounds 3]

Each measurement is a fresh process (the setting is per process, made when the kernels are
imported) training the reference, then the async schedule (defaults: mak 4, weight
stashing) over the training split twice each after a warm-up;
the two settings alternate so that a slow spell of a shared machine falls on both.
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys

CHILD = r"""
import json, resource, sys, time
import numpy as np
from molpipe.training.engines import make_engine, make_optimizers
from molpipe.runtime.memory import keep_freed_memory
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.training.settings import TrainConfig
from molpipe.training.session import make_items, prepare

prep = prepare(TrainConfig(data=sys.argv[1]))
rows = prep.split["train"]
items, _, _ = make_items(prep, rows, 16, np.random.default_rng(0), 0)
out = {"mallopt": keep_freed_memory()}
for schedule in ("reference", "async"):
    net = build_network(NetworkConfig(hidden=128, task=prep.task), prep.store.atom_dim,
                        prep.store.bond_dim, len(prep.targets), np.zeros(len(prep.targets)),
                        np.ones(len(prep.targets)), 0)
    with make_engine(schedule, net, make_optimizers(net, 1e-4), max_active_keys=4,
                     weight_stashing=True) as engine:
        engine.train(items[:8])
        r0, t0 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
        for _ in range(2):
            engine.train(items)
        r1, t1 = resource.getrusage(resource.RUSAGE_SELF), time.perf_counter()
    n = 2 * len(rows)
    out[schedule] = {"molecules_per_second": n / (t1 - t0),
                     "page_faults_per_molecule": (r1.ru_minflt - r0.ru_minflt) / n,
                     "system_us_per_molecule": (r1.ru_stime - r0.ru_stime) / n * 1e6,
                     "user_us_per_molecule": (r1.ru_utime - r0.ru_utime) / n * 1e6}
print(json.dumps(out))
"""


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default="esol")
    ap.add_argument("--rounds", type=int, default=3)
    args = ap.parse_args()
    runs = {"on": [], "off": []}
    for _ in range(args.rounds):
        for setting in ("off", "on"):
            env = {**os.environ, "MOLPIPE_MALLOPT": "0" if setting == "off" else "1"}
            out = subprocess.run([sys.executable, "-c", CHILD, args.data], env=env, check=True,
                                 capture_output=True, text=True).stdout
            runs[setting].append(json.loads(out.strip().splitlines()[-1]))
            print(setting, runs[setting][-1], flush=True)
    print("\n| schedule | mallopt | molecules/s | page faults / molecule | system µs / molecule | user µs / molecule |")
    print("| --- | --- | --- | --- | --- | --- |")
    for schedule in ("reference", "async"):
        for setting, rs in runs.items():
            rs = [r[schedule] for r in rs]
            med = {k: sorted(r[k] for r in rs)[len(rs) // 2] for k in rs[0]}
            print(f"| {schedule} | {setting} | {med['molecules_per_second']:,.0f} | "
                  f"{med['page_faults_per_molecule']:.1f} | {med['system_us_per_molecule']:.0f} | "
                  f"{med['user_us_per_molecule']:.0f} |")


if __name__ == "__main__":
    main()
