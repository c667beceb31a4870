"""The pipeline simulated on a machine with fewer cores than workers (processor sharing).

``simulate`` (molpipe.measure.simulate) gives every worker a core of its own: the model of
a cluster. On one machine six stage workers share its cores, and a layout of ``replicas``
fused workers is all about how work lands on cores, so this model adds:

- ``cores``: the busy workers share them equally (each runs at ``min(1, cores / busy)`` of a
  core, processor sharing); an idle worker costs nothing;
- ``replicas``: R copies of the placement's workers; the control node sends a new instance
  to the replica with the fewest in flight (ties in turn, as ``ControlNode`` does), and every
  replica's worker keeps its own accumulators;
- the rest as ``simulate``: a task costs its stage's measured forward or backward CPU
  seconds (measure them uncontended: ``single_core_costs``), an update its update cost on
  the worker that filled the accumulator, a message between workers ``latency`` seconds in
  flight and ``overhead`` CPU seconds of the receiver; messages to a stage on the same worker
  run at once; the control node costs nothing.
"""

from __future__ import annotations

from collections import deque

from molpipe.measure.simulate import Costs, Events, hop_position, placed
from molpipe.runtime.replicas import pick_replica

_EPS = 1e-15


def simulate_shared(paths: list[list[tuple[str, int]]], costs: Costs, where: dict, *,
                    cores: int = 2, replicas: int = 1, mak: int = 4, muf: int = 1,
                    latency: float = 0.0, overhead: float = 0.0) -> dict:
    """Seconds and instances/s of ``paths`` (one per instance) through the model.

    ``where``: (stage, step) -> worker of one replica (a missing step falls back to
    (stage, 0)); replica r's copy of worker w is ``w + r n``.
    """
    per = max(where.values()) + 1
    n_workers = per * replicas
    queues = [deque() for _ in range(n_workers)]
    task: list = [None] * n_workers          # (instance, hop) running, with work left
    left = [0.0] * n_workers
    busy_cpu = [0.0] * n_workers
    acc: dict = {}
    events = Events()
    push = events.push
    replica_of: dict[int, int] = {}
    load = [0] * replicas
    turn = 0

    def hop_pos(i, h):
        return hop_position(paths[i], h)

    def worker(i, h):
        return placed(where, hop_pos(i, h)) + replica_of[i] * per

    def work(w, i, h, remote):
        """CPU seconds of hop h of instance i on worker w (its update included)."""
        p, n = paths[i], len(paths[i])
        stage = hop_pos(i, h)[0]
        cost = (overhead if remote else 0.0) + (costs.fwd.get(stage, 0.0) if h < n
                                                else costs.bwd.get(stage, 0.0))
        if h >= n and stage not in {s for s, _ in p[:2 * n - 1 - h]}:     # last visit
            acc[(w, stage)] = acc.get((w, stage), 0) + 1
            if acc[(w, stage)] >= muf:
                acc[(w, stage)] = 0
                cost += costs.upd.get(stage, 0.0)
        return cost

    def begin(w, i, h, remote):
        task[w] = (i, h)
        left[w] = work(w, i, h, remote)

    def admit(t):
        nonlocal turn
        i = pending.popleft()
        r = pick_replica(load, turn)
        turn, replica_of[i] = r + 1, r
        load[r] += 1
        push(t + latency, "arrive", worker(i, 0), i, 0)

    pending = deque(range(len(paths)))
    for _ in range(min(mak, len(paths))):
        admit(0.0)
    t = t_end = 0.0
    while events or any(x is not None for x in task):
        running = [w for w in range(n_workers) if task[w] is not None]
        rate = min(1.0, cores / len(running)) if running else 0.0
        least = min(left[w] for w in running) if running else 0.0
        t_finish = t + least / rate if running else float("inf")
        t_event = events.next_time()
        finishing = t_finish <= t_event
        step = least if finishing else (t_event - t) * rate     # CPU seconds each ran
        for w in running:
            done = min(step, left[w])
            # the hops that end now end exactly (no residue of t's rounding left behind)
            left[w] = 0.0 if finishing and left[w] <= least * (1 + 1e-12) + _EPS else left[w] - done
            busy_cpu[w] += done
        t = t_finish if finishing else t_event
        for w in running:                    # finished hops: the next one, here or elsewhere
            if left[w] > 0.0:
                continue
            i, h = task[w]
            task[w] = None
            if h == 2 * len(paths[i]) - 1:
                push(t + latency, "done", i)
            elif worker(i, h + 1) == w:
                begin(w, i, h + 1, False)
                continue
            else:
                push(t + latency, "arrive", worker(i, h + 1), i, h + 1)
            if queues[w]:
                begin(w, *queues[w].popleft())
        while events and events.next_time() <= t:
            _, kind, data = events.pop()
            if kind == "arrive":
                w, i, h = data
                if task[w] is None:
                    begin(w, i, h, True)
                else:
                    queues[w].append((i, h, True))
            else:                            # an instance's DONE reached the control node
                (i,) = data
                t_end = t
                load[replica_of.pop(i)] -= 1
                if pending:
                    admit(t)
    n = len(paths)
    return {"seconds": t_end, "instances_per_second": n / t_end if t_end > 0 else float("inf"),
            "cpu": [b / t_end if t_end > 0 else 0.0 for b in busy_cpu]}


def replica_curve(costs: Costs, paths: list, ks=(1, 2, 4, 8, 16, 32, 64), *,
                  mak_per_replica: int = 2) -> list[dict]:
    """Instances/s of K fused replicas, each on a core of its own (``cores = K``), at
    ``mak_per_replica`` instances in flight per replica: the replicas layout on a K-core
    machine. No message crosses workers, so latency does not enter; what the model leaves out
    is the replicas' contention on the shared parameters (one lock per stage's optimizer)."""
    stages = dict.fromkeys(s for p in paths for s, _ in p)
    fused = {(s, 0): 0 for s in stages}
    rows = []
    for k in ks:
        r = simulate_shared(paths, costs, fused, cores=k, replicas=k, mak=mak_per_replica * k)
        rows.append({"workers": k, "used": k, "instances_per_second": r["instances_per_second"],
                     "max_utilization": max(r["cpu"])})
    return rows
