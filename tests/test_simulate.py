"""Simulator: exact small cases, and against the real thread pipeline for K=2."""

import pytest

from molpipe.runtime import Pipeline
from molpipe.measure.simulate import Costs, costs_from_trace, network_path, placement, scaling, simulate

from tests.runtime.toy import FIRST, make_items, make_net, route


def test_one_stage_without_latency_runs_at_one_over_cost():
    c = Costs({"a": 0.002}, {"a": 0.001})
    for mak in (1, 3):
        r = simulate([[("a", 0)]] * 50, c, {("a", 0): 0}, mak=mak)
        assert r["instances_per_second"] == pytest.approx(1 / 0.003)


def test_two_workers_saturate_at_the_slower_and_mak1_pays_every_latency():
    c = Costs({"a": 0.002, "b": 0.001}, {"a": 0.001, "b": 0.003}, {"b": 0.001})
    where = {("a", 0): 0, ("b", 0): 1}
    r = simulate([[("a", 0), ("b", 0)]] * 400, c, where, mak=16, muf=2)
    assert r["instances_per_second"] == pytest.approx(1 / 0.0045, rel=0.01)   # b: 4 ms + 1/2 update
    r = simulate([[("a", 0), ("b", 0)]] * 10, c, where, mak=1, latency=1e-3, muf=2)
    assert r["seconds"] == pytest.approx(10 * (0.007 + 4e-3) + 5 * 0.001)


def test_scaling_saturates_once_the_positions_run_out():
    c = Costs({"embed": 1e-3, "message": 1e-3, "update": 1e-3, "readout": 1e-3, "loss": 1e-4},
              {"embed": 1e-3, "message": 1e-3, "update": 1e-3, "readout": 1e-3, "loss": 1e-4})
    paths = [network_path(3, False)] * 200
    rows = scaling(c, paths, [1, 2, 4, 8, 16, 64], mak=64)
    rate = [r["instances_per_second"] for r in rows]
    assert all(b >= a * 0.99 for a, b in zip(rate, rate[1:]))
    assert rows[-1]["used"] == len(paths[0]) and rate[-1] == pytest.approx(rate[-2])
    assert placement(paths[0], c, 2, unroll=False)[("message", 2)] == placement(paths[0], c, 2, False)[("message", 0)]


def test_predicts_the_thread_pipeline_on_two_workers():
    stages, opts = make_net(seed=1, delay=0.004)
    items = make_items(60, seed=2)
    where = {"embed": 0, "loop": 0, "gate": 1, "head": 1, "loss": 1}
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4, placement=where, trace=True) as p:
        res = p.run(items)
    measured = len(items) / res.wall
    costs = costs_from_trace(res.trace)
    paths = []
    for _, inst, _ in items:
        path, at = [], (FIRST, 0)
        while at is not None:
            path.append(at)
            at = route(*at, inst)
        paths.append(path)
    pred = simulate(paths, costs, {(s, 0): w for s, w in where.items()}, mak=4)
    assert pred["instances_per_second"] == pytest.approx(measured, rel=0.25)
