"""The simulator against measurement, on this machine, for every layout (one process).

    python benchmarks/bench_simulate.py --data esol [--json benchmarks/results/simulate-esol.json]

1. Stage costs, uncontended: one fused worker, one instance in flight, on 800
   molecules sampled from the set (``measure_costs(..., layout="fused", max_active_keys=1)``).
2. Predicted training molecules/s on this machine's cores (``simulate_shared``: processor
   sharing) for the paths of the bench's own instances: the reference trainer (one worker,
   one in flight), async with a worker per stage (mak 4), async with 2 fused replicas.
3. Measured: ``molpipe bench`` of the same schedules in the same process.
"""

from __future__ import annotations

import argparse
import json
import os
from pathlib import Path

import numpy as np

from molpipe.measure.bench import BenchConfig, bench
from molpipe.measure.sharing import simulate_shared
from molpipe.measure.simulate import measure_costs
from molpipe.nn.network import STAGES
from molpipe.training.session import Session, make_items

LAYOUTS = {            # schedule name -> (placement of one replica, replicas, mak, cores)
    "reference": ("fused", 1, 1, 1),
    "async-stages": ("stages", 1, 4, None),
    "async-replicas": ("fused", 2, 4, None),
}


def instance_paths(data: str, size: int | None, seed: int = 0) -> tuple[list, int, float]:
    """Forward paths of one epoch of the bench's training instances, the instance size, and
    the mean molecules per instance."""
    session = Session(BenchConfig(data=data, seed=seed).settings())
    rows = np.sort(session.prep.split["train"])
    session.fit_scaling()
    size = size or session.instance_size()
    items, _, _ = make_items(session.prep, rows, size, np.random.default_rng(seed), 0)
    network = session.network()
    paths = [network.path(inst) for _, inst in items]
    return paths, size, float(np.mean([inst.n_mols for _, inst in items]))


def predict(paths, costs, stages, cores: int, latency: float, overhead: float) -> dict:
    out = {}
    for name, (layout, replicas, mak, c) in LAYOUTS.items():
        where = ({(s, 0): 0 for s in stages} if layout == "fused"
                 else {(s, 0): i for i, s in enumerate(stages)})
        r = simulate_shared(paths, costs, where, cores=c or cores, replicas=replicas, mak=mak,
                            latency=latency if layout != "fused" else 0.0, overhead=overhead)
        out[name] = r["instances_per_second"]
    return out


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--data", default="esol")
    ap.add_argument("--cores", type=int, default=os.cpu_count())
    ap.add_argument("--latency", type=float, default=50e-6)
    ap.add_argument("--overhead", type=float, default=20e-6)
    ap.add_argument("--epochs", type=int, default=4)
    ap.add_argument("--json", type=Path)
    args = ap.parse_args(argv)
    paths, size, per = instance_paths(args.data, None)
    costs = measure_costs(args.data, size=size, layout="fused", max_active_keys=1)
    stages = [s for s in STAGES if s in costs.fwd]
    predicted = {k: v * per for k, v in predict(paths, costs, stages, args.cores, args.latency,
                                                args.overhead).items()}
    measured = bench(BenchConfig(data=args.data, epochs=args.epochs, molecules_per_instance=size,
                                 schedules=tuple(LAYOUTS)))
    rows = {name: {"predicted": predicted[name],
                   "measured": measured[name]["molecules_per_second"],
                   "predicted_over_measured": predicted[name] / measured[name]["molecules_per_second"]}
            for name in LAYOUTS}
    print(f"{args.data}: {size} molecules per instance, {args.cores} cores "
          f"(latency {args.latency:g} s, overhead {args.overhead:g} s per message)")
    print(f"{'schedule':16} {'predicted':>10} {'measured':>10} {'ratio':>6}")
    for name, r in rows.items():
        print(f"{name:16} {r['predicted']:10,.0f} {r['measured']:10,.0f} "
              f"{r['predicted_over_measured']:6.2f}")
    if args.json:
        args.json.write_text(json.dumps({
            "data": args.data, "cores": args.cores, "latency": args.latency,
            "overhead": args.overhead, "molecules_per_instance": size,
            "costs": {"forward": costs.fwd, "backward": costs.bwd, "update": costs.upd},
            "schedules": rows, "settings": measured["settings"]}, indent=1, default=str))


if __name__ == "__main__":
    main()
