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
