"""Data-parallel replicas over MPI, predicted: molecules/s of R replicas from measured costs.

The model (``--backend mpi --layout replicas``, ``runtime/mpi_replicas.py``), stated once:

- one replica trains alone at ``rate1`` instances/s: the processor-sharing simulator's fused
  worker on one core (``sharing.simulate_shared``) over the measured stage costs;
- every ``muf x every`` instances a stage sends its parameter delta (``bytes[stage]`` of
  float32 parameters, half that on the wire as bfloat16) to the R - 1 others: the sender pays ``pack`` (delta, frame) plus, per peer, half a one-way
  message; each receiver pays the other half plus ``apply`` (add it twice). A message of
  ``b`` bytes costs ``latency + b x per_byte`` one way (measured: an MPI ping-pong between
  two ranks here, or the wire frame's own encode/decode when no MPI is at hand); with all
  replicas at one rate, each pays per instance of its own
  ``sum_s [pack_s + (R - 1)(one_way_s + apply_s)] / (muf every)``;
- each epoch rank 0 pushes parameters and optimizer state (3 x the parameter bytes) to every
  other rank and the last replica to finish costs half an instance;
- ``cores``: R replicas on C cores run at ``min(1, C / R)`` of a core each (None: one core
  per replica, the cluster).
"""

from __future__ import annotations

import time

import numpy as np

from molpipe.measure.simulate import Costs

SIZES = (4_096, 65_536, 262_144, 1_048_576)


def fit_line(xs, ys) -> tuple[float, float]:
    """(intercept, slope) of the least-squares line through ``(xs, ys)``, both clipped at 0."""
    a, b = np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[::-1]
    return max(float(a), 0.0), max(float(b), 0.0)


def _best(fn, repeat: int) -> float:
    best = float("inf")
    for _ in range(repeat):
        t0 = time.perf_counter()
        fn()
        best = min(best, time.perf_counter() - t0)
    return best


def wire_costs(sizes=SIZES, repeat: int = 30) -> dict:
    """Seconds the delta of ``b`` bytes of float32 parameters costs here without MPI:
    ``pack`` (bfloat16 delta, base, frame) and ``apply`` (decode, add to parameters and
    base), each ``(intercept, per parameter byte)``; ``ratio``: bytes on the wire per
    parameter byte (bfloat16: 0.5), the slope of the frames' sizes."""
    from molpipe.kernels import delta
    from molpipe.runtime import wire

    pack, apply, wire_bytes = [], [], []
    for b in sizes:
        P, base = np.random.default_rng(0).random(b // 4, dtype=np.float32), np.zeros(b // 4, np.float32)

        def send():
            buf, views = wire.frame({"k": "delta", "s": "x"}, {"W": (np.uint16, (P.size,))})
            delta.encode(P, base, views["W"])
            return buf

        buf = send()
        wire_bytes.append(buf.nbytes)

        def take():
            _, arrays = wire.unpack(buf)
            delta.add(P, base, arrays["W"])

        pack.append(_best(send, repeat))
        apply.append(_best(take, repeat))
    return {"pack": fit_line(sizes, pack), "apply": fit_line(sizes, apply), "sizes": list(sizes),
            "ratio": fit_line(sizes, wire_bytes)[1]}


def pingpong(comm, sizes=SIZES, repeat: int = 50) -> dict:
    """On ranks 0 and 1 of ``comm``: one-way seconds of a frame of ``b`` bytes through
    ``mpi.Link`` (Isend, Improbe, Recv: what deltas take), as ``(latency, per byte)``."""
    from molpipe.runtime import wire
    from molpipe.runtime.mpi import Link

    link, other = Link(comm, max_sleep=0.0), 1 - comm.rank
    times = []
    for b in sizes:
        buf = wire.pack({"k": "ping"}, {"x": np.zeros(b, np.uint8)})
        best = float("inf")
        for _ in range(repeat):
            comm.Barrier()
            t0 = time.perf_counter()
            if comm.rank == 0:
                link.send(other, buf, 31)
                link.wait(None, (31,))
            else:
                link.wait(None, (31,))
                link.send(other, buf, 31)
            best = min(best, (time.perf_counter() - t0) / 2)
        times.append(best)
    link.drain()
    latency, per_byte = fit_line(sizes, times)
    return {"latency": latency, "per_byte": per_byte, "sizes": list(sizes), "one_way": times}


def measure_pingpong(timeout: float = 120.0) -> dict | None:
    """``pingpong`` measured by ``mpiexec -n 2`` here (None without mpi4py or mpiexec)."""
    import json
    import os
    import shutil
    import subprocess
    import sys

    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    exe = shutil.which("mpiexec")
    if exe is None:
        return None
    proc = subprocess.run([exe, "-n", "2", sys.executable, "-m", "molpipe.measure.data_parallel"],
                          capture_output=True, text=True, timeout=timeout,
                          env={**os.environ, "OMP_NUM_THREADS": "1"})
    if proc.returncode != 0:
        raise RuntimeError(f"the MPI ping-pong failed (exit {proc.returncode}):\n{proc.stderr[-2000:]}")
    return json.loads(proc.stdout.strip().splitlines()[-1])


def replica_rate(costs: Costs, paths: list, mak: int = 4, muf: int = 1) -> float:
    """Instances/s of one fused replica on a core of its own (the simulator's)."""
    from molpipe.measure.sharing import simulate_shared

    stages = dict.fromkeys(s for p in paths for s, _ in p)
    fused = {(s, 0): 0 for s in stages}
    return simulate_shared(paths, costs, fused, cores=1, replicas=1, mak=mak, muf=muf)["instances_per_second"]


def data_parallel_curve(rate1: float, stage_bytes: dict[str, int], message: dict, wire: dict,
                        rs=(1, 2, 4, 8, 16, 32, 64), *, muf: int = 1, every: int = 1,
                        cores: int | None = None, instances_per_epoch: int = 1000) -> list[dict]:
    """Instances/s of R data-parallel replicas (the model above), one row per R: the
    exchange's CPU seconds per instance and the share of each replica's time it takes."""
    t1 = 1.0 / rate1
    lat, per_byte = message["latency"], message["per_byte"]
    p0, p1 = wire["pack"]
    a0, a1 = wire["apply"]
    ratio = wire.get("ratio", 1.0)                        # wire bytes per parameter byte
    total = float(sum(stage_bytes.values()))
    rows = []
    for r in rs:
        x = sum(p0 + p1 * b + (r - 1) * (lat + per_byte * ratio * b + a0 + a1 * b)
                for b in stage_bytes.values()) / (muf * every) if r > 1 else 0.0
        w = t1 + x
        share = 1.0 if cores is None else min(1.0, cores / r)
        n = instances_per_epoch / r                       # each replica's share of an epoch
        epoch = n * w / share + (r - 1) * (lat + per_byte * 3 * total) + (0.5 * w if r > 1 else 0.0)
        rows.append({"replicas": r, "instances_per_second": instances_per_epoch / epoch,
                     "exchange_seconds_per_instance": x, "exchange_share": x / w,
                     "speedup": (instances_per_epoch / epoch) * t1})
    return rows


if __name__ == "__main__":      # mpiexec -n 2 python -m molpipe.measure.data_parallel
    import json

    from molpipe.runtime.mpi import world

    comm = world()
    got = pingpong(comm)
    if comm.rank == 0:
        print(json.dumps(got))
