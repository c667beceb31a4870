"""Trace and utilization: every visit recorded, fractions in [0, 1], JSON and CSV files."""

import csv
import json

import numpy as np

from molpipe.runtime import Pipeline
from molpipe.runtime.trace import to_arrays, utilization

from .toy import FIRST, make_items, make_net, route


def expected_visits(items):
    out = set()
    for key, inst, train in items:
        at, path = (FIRST, 0), []
        while at is not None:
            path.append(at)
            at = route(*at, inst)
        out |= {(key, s, t, "forward" if train else "eval") for s, t in path}
        if train:
            out |= {(key, s, t, "backward") for s, t in path}
    return out


def test_trace_covers_every_visit_and_utilization_is_a_fraction(tmp_path):
    items = make_items(60, seed=31, eval_every=5)
    stages, opts = make_net(seed=32, delay=0.0005)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4, trace=True) as p:
        res = p.run(items)
        util = p.utilization()
        entries = p.trace()
    assert set(util) == set(range(5)) and all(0.0 < u <= 1.0 for u in util.values())
    visits = {(k, s, t, d) for _, _, _, k, s, t, d in entries if d != "update"}
    assert visits == expected_visits(items)
    cols = to_arrays(entries)
    assert np.all(cols["t_end"] >= cols["t_start"]) and np.all(cols["t_start"] >= 0)
    assert cols["t_end"].max() <= res.wall
    # busy intervals of one worker never overlap
    for w in range(5):
        a, b = cols["t_start"][cols["worker"] == w], cols["t_end"][cols["worker"] == w]
        assert np.all(a[1:] >= b[:-1])
    doc = json.loads(p.write_trace(tmp_path / "t.json").read_text())
    assert len(doc["entries"]) == len(entries) and doc["fields"][0] == "worker"
    with p.write_trace(tmp_path / "t.csv").open() as fh:
        rows = list(csv.reader(fh))
    assert rows[0] == ["worker", "t_start", "t_end", "key", "stage", "step", "direction"]
    assert len(rows) == len(entries) + 1


def test_utilization_clips():
    assert utilization({0: 2.0, 1: 0.5}, 1.0) == {0: 1.0, 1: 0.5}
    assert utilization({0: 1.0}, 0.0) == {0: 0.0}
    assert to_arrays([])["t_start"].shape == (0,)


def test_cpu_is_the_worker_threads_own_cpu_time_not_its_busy_wall_time():
    # every stage sleeps 1 ms a call (busy, no CPU), except "head", which spins 1 ms (busy
    # and CPU): the reports must tell the two apart
    import time

    stages, opts = make_net(seed=33, delay=0.001)
    head = stages["head"]
    head.delay = 0.0
    forward = head.forward

    def spinning(key, step, x, inst, train):
        end = time.perf_counter() + 0.001
        while time.perf_counter() < end:
            pass
        return forward(key, step, x, inst, train)

    head.forward = spinning
    with Pipeline(stages, opts, route, FIRST, max_active_keys=2) as p:
        res = p.run(make_items(40, seed=34))
        cpu = p.cpu_utilization()
    names = list(stages)
    spin, sleep = names.index("head"), names.index("loop")
    assert set(res.cpu) == set(range(len(names)))
    assert res.cpu[spin] >= 0.5 * res.busy[spin] > 0        # spinning: its busy time is CPU
    assert res.cpu[sleep] <= 0.5 * res.busy[sleep]          # sleeping: busy, but little CPU
    assert cpu[spin] == res.cpu[spin] / res.wall


def test_a_worker_records_at_most_trace_max_intervals_per_run(monkeypatch):
    """The timeline of a long run is its start: memory does not grow with the epoch."""
    from molpipe.runtime import worker

    monkeypatch.setattr(worker, "TRACE_MAX", 25)
    stages, opts = make_net(seed=32)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4, trace=True) as p:
        for _ in range(2):                           # the cap is per run
            p.run(make_items(60, seed=33))
            per_worker = {}
            for w, *_ in p.trace():
                per_worker[w] = per_worker.get(w, 0) + 1
            assert max(per_worker.values()) == 25 and len(per_worker) == 5
