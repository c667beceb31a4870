"""The data-parallel replicas model (measure/data_parallel.py): its arithmetic by hand."""

import pytest

from molpipe.measure.data_parallel import data_parallel_curve, fit_line, wire_costs

FREE = {"latency": 0.0, "per_byte": 0.0}
NO_WIRE = {"pack": (0.0, 0.0), "apply": (0.0, 0.0)}


def test_one_replica_runs_at_its_own_rate():
    row = data_parallel_curve(100.0, {"a": 1000}, {"latency": 1e-3, "per_byte": 1e-6},
                              {"pack": (1e-4, 1e-9), "apply": (1e-4, 1e-9)}, (1,))[0]
    assert row["instances_per_second"] == pytest.approx(100.0)
    assert row["speedup"] == pytest.approx(1.0) and row["exchange_seconds_per_instance"] == 0.0


def test_free_messages_leave_only_the_last_half_instance():
    n = 1000
    for row in data_parallel_curve(100.0, {"a": 10**6}, FREE, NO_WIRE, (2, 8),
                                   instances_per_epoch=n):
        r = row["replicas"]
        assert row["speedup"] == pytest.approx(n / (n / r + 0.5))


def test_exchange_cost_per_instance_by_hand():
    msg = {"latency": 2e-6, "per_byte": 1e-9}
    wire = {"pack": (1e-6, 2e-10), "apply": (3e-6, 4e-10)}
    b = {"a": 10_000, "b": 30_000}
    row = data_parallel_curve(50.0, b, msg, wire, (4,), muf=2, every=3)[0]
    by_hand = sum(1e-6 + 2e-10 * x + 3 * (2e-6 + 1e-9 * x + 3e-6 + 4e-10 * x)
                  for x in b.values()) / 6
    assert row["exchange_seconds_per_instance"] == pytest.approx(by_hand)
    assert 0 < row["exchange_share"] < 1
    # bfloat16 on the wire: the message carries half the bytes, pack and apply see them all
    half = data_parallel_curve(50.0, b, msg, {**wire, "ratio": 0.5}, (4,), muf=2, every=3)[0]
    by_hand = sum(1e-6 + 2e-10 * x + 3 * (2e-6 + 1e-9 * x / 2 + 3e-6 + 4e-10 * x)
                  for x in b.values()) / 6
    assert half["exchange_seconds_per_instance"] == pytest.approx(by_hand)


def test_costly_messages_saturate_and_shared_cores_cap():
    msg = {"latency": 5e-6, "per_byte": 5e-10}
    wire = {"pack": (1e-6, 3e-10), "apply": (1e-6, 3e-10)}
    rs = (1, 2, 4, 8, 16, 32, 64)
    own = data_parallel_curve(200.0, {"a": 10**6}, msg, wire, rs)
    speed = [r["speedup"] for r in own]
    assert all(b > a for a, b in zip(speed, speed[1:]))
    assert speed[-1] < 64 * 0.5                       # far from linear at 64
    two = data_parallel_curve(200.0, {"a": 10**6}, msg, wire, rs, cores=2)
    assert two[2]["instances_per_second"] < two[1]["instances_per_second"]   # 4 on 2 cores


def test_fit_line_and_the_wire_costs_grow_with_bytes():
    a, b = fit_line([1, 2, 3], [3.0, 5.0, 7.0])
    assert a == pytest.approx(1.0) and b == pytest.approx(2.0)
    w = wire_costs(sizes=(4_096, 262_144), repeat=5)
    assert w["pack"][1] > 0 and w["apply"][1] > 0 and w["ratio"] == pytest.approx(0.5)
