"""Throughput simulator: a discrete-event model of the asynchronous pipeline on K workers.

Assumptions (the model, stated once):

- a worker runs one task at a time, in arrival order, except that a message to a stage on
  the same worker runs at once (``Worker.run``'s local deque); a task costs the measured mean
  forward or backward time of its stage, and a stage's update (every ``muf`` instances)
  costs its measured update time, on the same worker, right after the backward that filled
  the accumulator;
- a message between two workers, or between a worker and the control node, arrives
  ``latency`` seconds after it is sent and costs ``overhead`` seconds of the receiving
  worker's time (decode); the control node itself costs nothing and admits an instance the
  moment another one's DONE arrives, keeping ``mak`` in flight;
- each instance follows its own path (embed, ``n_rounds`` x (message, update), rings if it
  has rings, readout, loss) and retraces it backward; the loss stage starts the backward
  itself; cores are never shared (one core per worker).

With ``unroll`` the looped stages are placed per round (round r of message/update is its
own position), so the positions can spread over more workers than there are stages; the
positions are cut into K contiguous groups of balanced cost (the rest of the K workers idle).
"""

from __future__ import annotations

import heapq
from collections import deque
from dataclasses import dataclass, field

import numpy as np

from molpipe.training.settings import DEFAULTS


@dataclass
class Costs:
    """Mean seconds per call of every stage: forward, backward, update."""

    fwd: dict[str, float]
    bwd: dict[str, float]
    upd: dict[str, float] = field(default_factory=dict)
    #: bytes of every stage's parameters (``measure_costs``: what a delta of it sends)
    param_bytes: dict[str, int] = field(default_factory=dict)


def costs_from_trace(trace: list[tuple]) -> Costs:
    """Mean durations per (stage, direction) of a RunResult trace
    ``(worker, t0, t1, key, stage, step, direction)``."""
    acc: dict[tuple[str, str], list[float]] = {}
    for _, t0, t1, _, stage, _, direction in trace:
        acc.setdefault((stage, direction), []).append(t1 - t0)
    mean = {k: float(np.mean(v)) for k, v in acc.items()}
    pick = lambda d: {s: v for (s, dd), v in mean.items() if dd == d}  # noqa: E731
    return Costs(pick("forward"), pick("backward"), pick("update"))


def network_path(n_rounds: int, has_rings: bool, split: bool = True) -> list[tuple[str, int]]:
    """The forward path of an instance of molpipe's network (``Network.route``'s own)."""
    from types import SimpleNamespace

    from molpipe.nn.network import STAGES, Network

    names = [s for s in STAGES if s not in (("propagate",) if split else ("message", "update"))]
    network = Network(None, dict.fromkeys(names))
    return network.path(SimpleNamespace(n_rounds=n_rounds, has_rings=has_rings))


def placement(positions: list[tuple[str, int]], costs: Costs, k: int, unroll: bool) -> dict:
    """(stage, step) -> worker: contiguous groups of balanced forward+backward cost."""
    from molpipe.runtime.mpi import balanced_placement

    names = [f"{s}#{t}" for s, t in positions] if unroll else list(dict.fromkeys(s for s, _ in positions))
    w = {n: costs.fwd.get(n.split("#")[0], 0) + costs.bwd.get(n.split("#")[0], 0) for n in names}
    p = balanced_placement(names, min(k, len(names)), w)
    if unroll:
        return {pos: p[f"{pos[0]}#{pos[1]}"] for pos in positions}
    return {pos: p[pos[0]] for pos in positions}


class Events:
    """The simulators' event queue: ``(time, kind, data)`` in time order, ties in push order."""

    def __init__(self):
        self._heap: list = []
        self._seq = 0

    def push(self, t: float, kind: str, *data) -> None:
        heapq.heappush(self._heap, (t, self._seq, kind, data))
        self._seq += 1

    def pop(self) -> tuple:
        t, _, kind, data = heapq.heappop(self._heap)
        return t, kind, data

    def next_time(self) -> float:
        """When the next event happens (inf when none is left)."""
        return self._heap[0][0] if self._heap else float("inf")

    def __bool__(self) -> bool:
        return bool(self._heap)


def placed(where: dict, pos: tuple[str, int]) -> int:
    """The worker of ``pos`` = (stage, step) in ``where`` (a missing step: ``(stage, 0)``'s)."""
    return where[pos] if pos in where else where[(pos[0], 0)]


def hop_position(path: list[tuple[str, int]], h: int) -> tuple[str, int]:
    """(stage, step) of hop ``h`` of an instance: hops 0..n-1 run ``path`` forward, n..2n-1
    backward along it reversed."""
    return path[h] if h < len(path) else path[2 * len(path) - 1 - h]


def simulate(paths: list[list[tuple[str, int]]], costs: Costs, where: dict, *, mak: int = 8,
             muf: int = 1, latency: float = 0.0, overhead: float = 0.0) -> dict:
    """Run ``paths`` (one per instance) through the model; returns seconds and instances/s.

    ``where`` maps (stage, step) -> worker (a missing step falls back to (stage, 0)).
    """
    def worker(pos):
        return placed(where, pos)

    n_workers = max(where.values()) + 1
    queues = [deque() for _ in range(n_workers)]
    idle = [True] * n_workers
    busy = [0.0] * n_workers
    acc: dict[str, int] = {}
    events = Events()
    push = events.push

    def hop_pos(i, h):
        return hop_position(paths[i], h)

    def run_chain(w, t, i, h, remote):
        """Run task (i, h) on worker w from time t, then its local successors; return end time."""
        t += overhead if remote else 0.0
        while True:
            p, n = paths[i], len(paths[i])
            stage = hop_pos(i, h)[0]
            t += costs.fwd.get(stage, 0.0) if h < n else costs.bwd.get(stage, 0.0)
            if h >= n and stage not in {s for s, _ in p[:2 * n - 1 - h]}:   # last visit
                acc[stage] = acc.get(stage, 0) + 1
                if acc[stage] >= muf:
                    acc[stage] = 0
                    t += costs.upd.get(stage, 0.0)
            if h == 2 * n - 1:                                   # backward done: tell control
                push(t + latency, "done", i)
                return t
            nxt = worker(hop_pos(i, h + 1))
            if nxt != w:
                push(t + latency, "arrive", nxt, i, h + 1)
                return t
            h += 1

    def start(w, t):
        i, h, remote = queues[w].popleft()
        idle[w] = False
        end = run_chain(w, t, i, h, remote)
        busy[w] += end - t
        push(end, "free", w)

    pending = deque(range(len(paths)))
    first = worker(paths[0][0]) if paths else 0
    for _ in range(min(mak, len(paths))):
        push(latency, "arrive", first, pending.popleft(), 0)
    t_end = 0.0
    while events:
        t, kind, data = events.pop()
        if kind == "arrive":
            w, i, h = data
            queues[w].append((i, h, True))
            if idle[w]:
                start(w, t)
        elif kind == "free":
            (w,) = data
            idle[w] = True
            if queues[w]:
                start(w, t)
        else:                                                    # done at the control node
            t_end = t
            if pending:
                push(t + latency, "arrive", worker(paths[pending[0]][0]), pending.popleft(), 0)
    n = len(paths)
    return {"seconds": t_end, "instances_per_second": n / t_end if t_end > 0 else float("inf"),
            "utilization": [b / t_end if t_end > 0 else 0.0 for b in busy]}


def scaling(costs: Costs, paths: list, ks, *, mak: int, muf: int = 1, latency: float = 0.0,
            overhead: float = 0.0, unroll: bool = True, positions=None) -> list[dict]:
    """Predicted instances/s for every K in ``ks`` (balanced contiguous placements of
    ``positions``, by default the longest path)."""
    longest = positions or max(paths, key=len)
    rows = []
    for k in ks:
        where = placement(longest, costs, k, unroll)
        r = simulate(paths, costs, where, mak=mak, muf=muf, latency=latency, overhead=overhead)
        rows.append({"workers": k, "used": max(where.values()) + 1,
                     "instances_per_second": r["instances_per_second"],
                     "max_utilization": max(r["utilization"])})
    return rows


def measure_costs(data: str = "qm9", n_molecules: int = 800, hidden: int = DEFAULTS.hidden,
                  size: int = 16, **engine) -> Costs:
    """Stage costs from a short thread-backend training pass on ``data`` (this machine), of
    ``molpipe train``'s network (one ``Session``) on ``n_molecules`` of its molecules (a
    seeded sample).

    ``engine``: ``Session.engine`` overrides; ``layout="fused", max_active_keys=1`` measures
    each stage's CPU seconds with nothing else running (``molpipe.measure.sharing``'s input).
    """
    from molpipe.training.session import Session
    from molpipe.training.settings import TrainConfig

    session = Session(TrainConfig(data=data, hidden=hidden, molecules_per_instance=size,
                                  schedule="async", trace=True))
    # a seeded sample of the whole set, not its first rows (QM9's are its smallest molecules)
    rows = np.sort(np.random.default_rng(0).permutation(len(session.store))[:n_molecules])
    session.fit_scaling(rows)
    network = session.network()
    items, _, _ = session.items(rows, np.random.default_rng(0), 0)
    with session.engine(network, session.optimizers(network), **engine) as run:
        run.train(items[:4])                   # compile, warm
        run.train(items)
        costs = costs_from_trace(run.trace())
    costs.param_bytes = {s: int(sum(p.nbytes for p in st.params.values()))
                         for s, st in network.stages.items() if st.params}
    return costs


def random_paths(n: int = 2000, max_rounds: int = 6, ring_fraction: float = 0.6,
                 seed: int = 0) -> list[list[tuple[str, int]]]:
    """``n`` paths of molpipe's network: rounds drawn from 3..max_rounds, rings with
    probability ``ring_fraction`` (seeded)."""
    rng = np.random.default_rng(seed)
    return [network_path(int(rng.integers(3, max_rounds + 1)), bool(rng.random() < ring_fraction))
            for _ in range(n)]


def predict_curve(costs: Costs, ks=(1, 2, 4, 8, 16, 32, 64), *, mak: int = 8, latency: float = 50e-6,
                  overhead: float = 20e-6, max_rounds: int = 6, ring_fraction: float = 0.6,
                  n: int = 2000, seed: int = 0) -> list[dict]:
    """Instances/s for K workers on a network like molpipe's (rounds 3..max, some rings)."""
    paths = random_paths(n, max_rounds, ring_fraction, seed)
    return scaling(costs, paths, ks, mak=mak, latency=latency, overhead=overhead,
                   positions=network_path(max_rounds, True))
