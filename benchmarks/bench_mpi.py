"""MPI backend against threads: message round trip, wire overhead, training throughput.

    python benchmarks/bench_mpi.py all            # runs every part below, prints a summary
    mpiexec -n 2 python benchmarks/bench_mpi.py pingpong     # 10 KB round trip between ranks
    python benchmarks/bench_mpi.py pingpong-threads          # the same with queue.SimpleQueue
    python benchmarks/bench_mpi.py wire                      # encode+decode of real messages
    mpiexec -n 3 python benchmarks/bench_mpi.py train --data esol --backend mpi
    python benchmarks/bench_mpi.py simulate                  # predicted curve, K = 1..64
"""

from __future__ import annotations

import argparse
import json
import os
import queue
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
N_PING = 2000


def pingpong_mpi(nbytes: int = 10_000) -> None:
    from molpipe.runtime.mpi import Link, world
    from molpipe.runtime import wire

    comm = world()
    link = Link(comm)
    buf = wire.pack({"k": "ping"}, {"x": np.zeros(nbytes // 4, np.float32)})
    other = 1 - comm.rank
    for i in range(N_PING + 100):
        if i == 100:
            t0 = time.perf_counter()
        if comm.rank == 0:
            link.send(other, buf)
            link.wait(None)
        else:
            link.wait(None)
            link.send(other, buf)
    if comm.rank == 0:
        us = (time.perf_counter() - t0) / N_PING * 1e6
        print(json.dumps({"mpi_round_trip_us": us, "bytes": int(buf.nbytes)}))
    link.drain()


def pingpong_threads(nbytes: int = 10_000) -> dict:
    a, b = queue.SimpleQueue(), queue.SimpleQueue()
    x = np.zeros(nbytes // 4, np.float32)

    def echo():
        for _ in range(N_PING + 100):
            b.put(a.get())

    t = threading.Thread(target=echo)
    t.start()
    for i in range(N_PING + 100):
        if i == 100:
            t0 = time.perf_counter()
        a.put(x)
        b.get()
    t.join()
    return {"thread_round_trip_us": (time.perf_counter() - t0) / N_PING * 1e6}


def wire_cost(data: str = "esol", size: int = 16) -> dict:
    """Bytes and encode+decode time of the messages of one real instance (embed -> message)."""
    from molpipe.data.instance import pack
    from molpipe.data.store import open_data
    from molpipe.nn.network import NetworkConfig, build_network
    from molpipe.runtime import wire
    from molpipe.runtime.message import Kind, Message

    store = open_data(data)
    rows = np.arange(size)
    inst = pack(store.graphs(rows), store.targets[rows], rows=rows)
    net = build_network(NetworkConfig(), store.atom_dim, store.bond_dim, store.targets.shape[1])
    y = net.stages["embed"].forward(0, 0, {}, inst, False)
    msg = Message(Kind.FORWARD, 0, "message", 0, y, (("embed", 0),), inst)
    n = 500
    t0 = time.perf_counter()
    for _ in range(n):
        wire.decode(*wire.unpack(wire.encode(msg)))
    per = (time.perf_counter() - t0) / n
    hops = len(net.path(inst))
    return {"message_bytes": int(wire.encode(msg).nbytes), "encode_decode_us": per * 1e6,
            "instance_bytes": int(sum(getattr(inst, f).nbytes for f in inst.__dataclass_fields__
                                      if isinstance(getattr(inst, f), np.ndarray))),
            "messages_per_instance": 2 * hops + 2,
            "overhead_per_instance_ms": (2 * hops + 2) * per * 1e3}


def train_once(data: str, backend: str, limit: int | None, epochs: int) -> None:
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    out = tempfile.mkdtemp(prefix=f"bench-mpi-{backend}-")
    report = train(TrainConfig(data=data, backend=backend, epochs=epochs, limit=limit,
                               patience=epochs, trace=False), out)
    if report:      # rank 0 (and the thread backend)
        print(json.dumps({"data": data, "backend": backend,
                          "molecules_per_second": report["train_molecules_per_second"],
                          "utilization": report["utilization"]}))


def simulate_curve(ks=(1, 2, 4, 6, 8, 12, 16, 32, 64), latency: float = 50e-6) -> list[dict]:
    """QM9-sized network (d_h 128, up to 6 rounds, rings): stage costs from a thread run on QM9."""
    from molpipe.measure.simulate import measure_costs, predict_curve

    costs = measure_costs("qm9")
    return [{"mak": mak, **r} for mak in (8, 64)
            for r in predict_curve(costs, ks, mak=mak, latency=latency)]


def _run(cmd: list[str], timeout: float = 900) -> list[dict]:
    env = {**os.environ, "OPENBLAS_NUM_THREADS": "1", "OMP_NUM_THREADS": "1"}
    p = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=timeout)
    if p.returncode:
        raise SystemExit(f"{' '.join(cmd)} failed:\n{p.stdout}\n{p.stderr}")
    return [json.loads(line) for line in p.stdout.splitlines() if line.startswith("{")]


def main() -> None:
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument("part", choices=["all", "pingpong", "pingpong-threads", "wire", "train", "simulate"])
    ap.add_argument("--data", default="esol")
    ap.add_argument("--backend", default="mpi")
    ap.add_argument("--limit", type=int, default=None)
    ap.add_argument("--epochs", type=int, default=3)
    a = ap.parse_args()
    if a.part == "pingpong":
        return pingpong_mpi()
    if a.part == "pingpong-threads":
        return print(json.dumps(pingpong_threads()))
    if a.part == "wire":
        return print(json.dumps(wire_cost(a.data)))
    if a.part == "train":
        return train_once(a.data, a.backend, a.limit, a.epochs)
    if a.part == "simulate":
        for row in simulate_curve():
            print(json.dumps(row))
        return None
    me = [sys.executable, str(Path(__file__).resolve())]
    out = {**_run(["mpiexec", "-n", "2", *me, "pingpong"])[0], **pingpong_threads(),
           **wire_cost()}
    for data, limit in (("esol", None), ("qm9", 4000)):
        lim = ["--limit", str(limit)] if limit else []
        mpi = _run(["mpiexec", "-n", "3", *me, "train", "--data", data, "--backend", "mpi", *lim])[0]
        thr = _run([*me, "train", "--data", data, "--backend", "thread", *lim])[0]
        out[f"{data}_mpi_mol_s"] = mpi["molecules_per_second"]
        out[f"{data}_thread_mol_s"] = thr["molecules_per_second"]
        out[f"{data}_mpi_over_thread"] = mpi["molecules_per_second"] / thr["molecules_per_second"]
    print(json.dumps(out, indent=2))


if __name__ == "__main__":
    main()
