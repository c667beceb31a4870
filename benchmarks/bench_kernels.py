"""Per-kernel forward/backward times, full forward_backward per molecule, numba compile times.

Usage: python benchmarks/bench_kernels.py [--hidden 64 128 300] [--repeat 50] [--no-compile]
       python benchmarks/bench_kernels.py --roofline [--data esol|qm9] [--hidden 128] [--json]
Instance: 16 molecules of ~25 heavy atoms from datasets/lipophilicity.csv (featurized).
``--roofline``: every stage's forward and backward in FLOP/s against one core's float32 matmul
rate (same shapes; 2048² for the peak), and its working set against the L2 cache, on an
instance of ``molpipe train``'s own (``--data``, its instance size: ESOL 16, QM9 subset 24)
through the network ``molpipe train`` builds (molpipe.measure.roofline); ``--json`` writes
benchmarks/results/roofline-<data>.json.
One BLAS thread (the trainer runs one worker per core). OpenBLAS picks its kernels when it
loads: on AMD Zen 4/5 it picks "Haswell" (AVX2); ``OPENBLAS_CORETYPE=SkylakeX`` in the
environment selects the AVX-512 kernels, ~1.8x faster float32 matmuls here.
"""

from __future__ import annotations

import argparse
import csv
import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
from threadpoolctl import threadpool_info, threadpool_limits

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from molpipe.chem.featurize import featurize  # noqa: E402
from molpipe.data.instance import pack  # noqa: E402
from molpipe.kernels import activations as A  # noqa: E402
from molpipe.kernels import dense, gru, loss, optim, rings, typed_message  # noqa: E402
from molpipe.nn.network import NetworkConfig, build_network  # noqa: E402
from molpipe.nn.optim import Adam  # noqa: E402
from molpipe.nn.layout import blocks_from_columns  # noqa: E402
from molpipe.measure.roofline import median_cpu_seconds  # noqa: E402


def bench_instance(n_mols: int = 16, lo: int = 22, hi: int = 28):
    """n_mols molecules with lo..hi heavy atoms from lipophilicity.csv, packed."""
    graphs, ys = [], []
    with open(ROOT / "datasets" / "lipophilicity.csv") as f:
        for row in csv.DictReader(f):
            g = featurize(row["smiles"])
            if lo <= g.n_atoms <= hi:
                graphs.append(g)
                ys.append([float(row["lipo"])])
            if len(graphs) == n_mols:
                break
    return pack(graphs, np.array(ys, np.float32))


def timeit(f, repeat: int) -> float:
    """Median CPU time of the calling thread for f(), in microseconds (after a warm-up call)."""
    return 1e6 * median_cpu_seconds(f, repeat)


def kernel_table(inst, d_h: int, repeat: int) -> list[tuple[str, float, float]]:
    rng = np.random.default_rng(0)
    f32 = np.float32
    n = inst.n_atoms
    H = rng.normal(size=(n, d_h)).astype(f32)
    W = (rng.normal(size=(d_h, 3 * d_h)) / np.sqrt(d_h)).astype(f32)
    W_cols = (rng.normal(size=(d_h, 4 * d_h)) / np.sqrt(d_h)).astype(f32)   # H W_m as one matmul
    W_m = blocks_from_columns(W_cols, 4)                     # the network's (4, d_h, d_h) blocks
    b = np.zeros(3 * d_h, f32)
    HW = dense.dense_fwd(H, W_cols, np.zeros(4 * d_h, f32))
    Ea = rng.normal(size=(n, d_h)).astype(f32)
    MX, HU = dense.dense_fwd(H, W, b), dense.dense_fwd(H, W, b)
    H2, gates = gru.gru_fwd(MX, HU, H, inst.atom_rounds, 0)
    dY3 = rng.normal(size=(n, 3 * d_h)).astype(f32)
    plan = typed_message.pair_plan(inst.dst, inst.etype, n, 4)
    _, S = typed_message.typed_message_fwd(H, Ea, W_m, inst.src, *plan)
    R = rings.ring_pool_fwd(H, inst.ring_atoms, inst.ring_offsets)
    Y = rng.normal(size=(inst.n_mols, 1)).astype(f32)
    p = rng.normal(size=d_h * 3 * d_h).astype(f32)
    g, m, v = p.copy(), np.zeros_like(p), np.zeros_like(p)
    rows = [
        ("dense H W (d_h x 3d_h)", lambda: dense.dense_fwd(H, W, b),
         lambda: dense.dense_bwd(H, W, dY3)),
        ("dense H W_m (d_h x 4d_h)", lambda: dense.dense_fwd(H, W_cols, np.zeros(4 * d_h, f32)),
         lambda: dense.dense_bwd(H, W_cols, HW)),
        ("tanh", lambda: A.tanh_fwd(H), lambda: A.tanh_bwd(H, H)),
        ("sigmoid", lambda: A.sigmoid_fwd(H), lambda: A.sigmoid_bwd(H, H)),
        ("typed_message (+ pair_plan)", lambda: typed_message.typed_message_fwd(
            H, Ea, W_m, inst.src, *typed_message.pair_plan(inst.dst, inst.etype, n, 4)),
         lambda: typed_message.typed_message_bwd(H, S, W_m, inst.src, *plan)),
        ("gru", lambda: gru.gru_fwd(MX, HU, H, inst.atom_rounds, 0),
         lambda: gru.gru_bwd(H2, H, np.ascontiguousarray(HU[:, 2 * d_h:]), gates,
                             inst.atom_rounds, 0)),
        ("ring_pool", lambda: rings.ring_pool_fwd(H, inst.ring_atoms, inst.ring_offsets),
         lambda: rings.ring_pool_bwd(R, inst.ring_atoms, inst.ring_offsets, n)),
        ("ring_broadcast", lambda: rings.ring_broadcast_fwd(H, R, inst.ring_atoms, inst.ring_offsets),
         lambda: rings.ring_broadcast_bwd(H, inst.ring_atoms, inst.ring_offsets)),
        ("masked_mse", lambda: loss.masked_mse_fwd(Y, Y), lambda: loss.masked_mse_bwd(Y, Y, 1.0)),
        ("adam_step (3 d_h^2)", lambda: optim.adam_step(p, g, m, v, 1e-9, .9, .999, 1e-8, 0., 1., 1),
         lambda: None),
    ]
    return [(name, timeit(f, repeat), timeit(bw, repeat)) for name, f, bw in rows]


def network_times(inst, d_h: int, repeat: int) -> tuple[float, float, float]:
    """(forward_backward, predict, optimizer step over all stages), microseconds per instance."""
    net = build_network(NetworkConfig(hidden=d_h), inst.V.shape[1], inst.E.shape[1], 1)
    opts = {k: Adam(s.params, lr=1e-9) for k, s in net.stages.items()}

    def step():
        for k, s in net.stages.items():
            opts[k].step(s.grads, 1.0)

    return (timeit(lambda: net.forward_backward(0, inst), repeat),
            timeit(lambda: net.predict(inst), repeat), timeit(step, repeat))


def stage_times(inst, d_h: int, repeat: int) -> dict[str, float]:
    """Thread CPU time per stage (forward + backward over all its steps), us per instance."""
    net = build_network(NetworkConfig(hidden=d_h), inst.V.shape[1], inst.E.shape[1], 1)
    path = net.path(inst)
    acc = {name: [] for name in net.stages}
    for r in range(repeat + 1):
        spent = dict.fromkeys(net.stages, 0.0)
        x: dict = {}
        for name, step in path:
            t0 = time.thread_time()
            x = net.stages[name].forward(r, step, x, inst, True)
            spent[name] += time.thread_time() - t0
        dy: dict = {}
        for name, step in reversed(path):
            t0 = time.thread_time()
            dy = net.stages[name].backward(r, step, dy, inst)
            spent[name] += time.thread_time() - t0
        if r:
            for name, t in spent.items():
                acc[name].append(t)
    return {name: 1e6 * float(np.median(ts)) for name, ts in acc.items()}


def minor_faults_per_call(f, repeat: int = 10) -> float:
    """Page faults per call of f (fresh large arrays that malloc maps and unmaps)."""
    import resource
    f()
    r0 = resource.getrusage(resource.RUSAGE_SELF).ru_minflt
    for _ in range(repeat):
        f()
    return (resource.getrusage(resource.RUSAGE_SELF).ru_minflt - r0) / repeat


COMPILE_SNIPPET = """
import time, sys
t0 = time.perf_counter()
sys.path.insert(0, {root!r})
sys.argv = ['x']
import benchmarks.bench_kernels as b
inst = b.bench_instance(4)
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.nn.optim import Adam
t1 = time.perf_counter()
net = build_network(NetworkConfig(hidden=16), inst.V.shape[1], inst.E.shape[1], 1)
net.forward_backward(0, inst)
for s in net.stages.values():
    Adam(s.params).step(s.grads, 1.0)
print(t1 - t0, time.perf_counter() - t1)
"""


def compile_times() -> tuple[float, float]:
    """First forward_backward + Adam step in a fresh process: (cold cache, warm cache) seconds."""
    with tempfile.TemporaryDirectory() as cache:
        env = dict(os.environ, NUMBA_CACHE_DIR=cache)
        out = []
        for _ in range(2):
            r = subprocess.run([sys.executable, "-c", COMPILE_SNIPPET.format(root=str(ROOT))],
                               env=env, capture_output=True, text=True, check=True)
            out.append(float(r.stdout.split()[-1]))
    return out[0], out[1]


def train_instance(data: str, hidden: int):
    """A network and an instance as ``molpipe train`` makes them: the session's network and,
    of its training instances that visit the ring stage, the one of median atom count."""
    from molpipe.training.session import Session
    from molpipe.training.settings import TrainConfig

    session = Session(TrainConfig(data=data, hidden=hidden, trace=False))
    rows = session.split["train"]
    session.fit_scaling()
    items, _, _ = session.items(rows, None, 0)
    insts = sorted((inst for _, inst in items if inst.has_rings), key=lambda i: i.n_atoms)
    return session.network(), insts[len(insts) // 2]


def roofline_main(args) -> None:
    from molpipe.kernels import one_blas_thread
    from molpipe.measure.roofline import format_table, peak_gflops, roofline

    d_h = args.hidden[0] if args.hidden else 128
    net, inst = train_instance(args.data, d_h)
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; {args.data}, "
          f"hidden {d_h}: instance of {inst.n_mols} molecules, {inst.n_atoms} atoms, "
          f"{inst.E.shape[0]} directed bonds, {inst.ring_offsets.size - 1} rings, "
          f"rounds {inst.n_rounds}; {args.repeat} repeats, median thread CPU time")
    with one_blas_thread():
        result = roofline(net, inst, args.repeat, peak=peak_gflops(args.peak_n))
    result.update(data=args.data, hidden=d_h, repeat=args.repeat,
                  instance={"n_mols": inst.n_mols, "n_atoms": inst.n_atoms,
                            "n_edges": int(inst.E.shape[0]), "n_rounds": int(inst.n_rounds),
                            "n_rings": int(inst.ring_offsets.size - 1)})
    print(format_table(result))
    if args.json:
        out = Path(args.json_path or ROOT / "benchmarks" / "results" / f"roofline-{args.data}.json")
        out.write_text(json.dumps(result, indent=1) + "\n")
        print(f"wrote {out}")


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--hidden", type=int, nargs="+", default=None,
                    help="hidden sizes (default 64 128 300; --roofline: 128)")
    ap.add_argument("--repeat", type=int, default=None, help="default 50 (--roofline: 200)")
    ap.add_argument("--no-compile", action="store_true", help="skip the compile-time runs")
    ap.add_argument("--roofline", action="store_true", help="the stage roofline (see above)")
    ap.add_argument("--data", default="esol", help="--roofline: a bundled data set (esol, qm9)")
    ap.add_argument("--json", action="store_true", help="--roofline: write the JSON")
    ap.add_argument("--json-path", default=None, help="--roofline: where (default results/)")
    ap.add_argument("--peak-n", type=int, default=2048, help="--roofline: the peak matmul's size")
    args = ap.parse_args()
    if args.roofline:
        args.repeat = args.repeat or 200
        return roofline_main(args)
    args.hidden = args.hidden or [64, 128, 300]
    args.repeat = args.repeat or 50
    inst = bench_instance()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cores; BLAS: "
          + ", ".join(f"{Path(i['filepath']).name.split('-')[0]} {i['version']} {i.get('architecture')}"
                      for i in threadpool_info() if i["user_api"] == "blas"))
    print(f"instance: {inst.n_mols} molecules, {inst.n_atoms} atoms, {inst.E.shape[0]} edges, "
          f"{int(np.diff(inst.ring_offsets).size)} rings, rounds {inst.n_rounds} "
          f"(per molecule {sorted(set(inst.atom_rounds.tolist()))}), float32, 1 BLAS thread")
    with threadpool_limits(1):
        for d_h in args.hidden:
            print(f"\nhidden {d_h}: kernel times (median thread CPU time, us)")
            print(f"  {'kernel':28s} {'forward':>9s} {'backward':>9s}")
            for name, tf, tb in kernel_table(inst, d_h, args.repeat):
                print(f"  {name:28s} {tf:9.1f} {tb:9.1f}")
            fb, pr, st = network_times(inst, d_h, max(10, args.repeat // 2))
            print(f"  forward_backward: {fb / 1e3:.2f} ms/instance = {fb / inst.n_mols:.0f} us/molecule "
                  f"({1e6 * inst.n_mols / fb:.0f} molecules/s); predict {pr / inst.n_mols:.0f} "
                  f"us/molecule; Adam step over all stages {st / 1e3:.2f} ms")
            per_stage = stage_times(inst, d_h, max(10, args.repeat // 2))
            total = sum(per_stage.values())
            print("  per stage (forward + backward, ms/instance): " + ", ".join(
                f"{k} {v / 1e3:.2f} ({100 * v / total:.0f}%)" for k, v in per_stage.items()))
            if d_h == args.hidden[0]:
                net = build_network(NetworkConfig(hidden=d_h), inst.V.shape[1], inst.E.shape[1], 1)
                print(f"  page faults per forward_backward: "
                      f"{minor_faults_per_call(lambda: net.forward_backward(0, inst)):.0f} "
                      "(MALLOC_MMAP_THRESHOLD_/MALLOC_TRIM_THRESHOLD_ large removes them)")
    if not args.no_compile:
        cold, warm = compile_times()
        print(f"\nfirst forward_backward + Adam step in a new process: cold numba cache {cold:.1f} s, "
              f"warm cache {warm:.2f} s")


if __name__ == "__main__":
    main()
