"""The processor-sharing simulator: cores shared by busy workers, replicas of the layout."""

import pytest

from molpipe.measure.sharing import simulate_shared
from molpipe.measure.simulate import Costs, network_path

COSTS = Costs(fwd={"embed": 1.0, "message": 2.0, "update": 2.0, "rings": 1.0, "readout": 1.0,
                   "loss": 0.5},
              bwd={"embed": 1.0, "message": 3.0, "update": 3.0, "rings": 1.0, "readout": 1.5,
                   "loss": 0.5},
              upd={"embed": 0.1, "message": 0.1, "update": 0.1, "rings": 0.1, "readout": 0.1})
PATHS = [network_path(3, True), network_path(2, False)] * 20
STAGES = ["embed", "message", "update", "rings", "readout", "loss"]


def _work(path):
    """CPU seconds of one instance: every hop forward and back, one update per stage."""
    return (sum(COSTS.fwd[s] + COSTS.bwd[s] for s, _ in path)
            + sum(COSTS.upd.get(s, 0.0) for s in dict.fromkeys(s for s, _ in path)))


def test_one_fused_worker_runs_the_work_back_to_back():
    fused = {(s, 0): 0 for s in STAGES}
    r = simulate_shared(PATHS, COSTS, fused, cores=1, mak=1)
    assert r["seconds"] == pytest.approx(sum(_work(p) for p in PATHS))


def test_two_fused_replicas_on_two_cores_take_half_the_time_and_not_on_one():
    fused = {(s, 0): 0 for s in STAGES}
    total = sum(_work(p) for p in PATHS)
    two = simulate_shared(PATHS, COSTS, fused, cores=2, replicas=2, mak=2)
    assert two["seconds"] == pytest.approx(total / 2, rel=0.05)
    shared = simulate_shared(PATHS, COSTS, fused, cores=1, replicas=2, mak=2)
    assert shared["seconds"] == pytest.approx(total, rel=1e-6)
    # mak 1 leaves the second replica idle: no faster than one worker
    one = simulate_shared(PATHS, COSTS, fused, cores=2, replicas=2, mak=1)
    assert one["seconds"] == pytest.approx(total)


def test_a_worker_per_stage_never_beats_the_cores_it_shares():
    per_stage = {(s, 0): i for i, s in enumerate(STAGES)}
    total = sum(_work(p) for p in PATHS)
    for cores in (1, 2, 6):
        r = simulate_shared(PATHS, COSTS, per_stage, cores=cores, mak=8, latency=0.01,
                            overhead=0.001)
        assert r["seconds"] >= total / cores - 1e-9
        assert sum(r["cpu"]) * r["seconds"] >= total      # messages' overhead is work too
    # more cores help up to the busiest stage's share
    slow = simulate_shared(PATHS, COSTS, per_stage, cores=1, mak=8)["seconds"]
    fast = simulate_shared(PATHS, COSTS, per_stage, cores=6, mak=8)["seconds"]
    assert fast < slow / 2


def test_replicas_on_cores_of_their_own_scale_with_their_number():
    from molpipe.measure.sharing import replica_curve

    rows = replica_curve(COSTS, PATHS * 4, ks=(1, 2, 4))
    one = rows[0]["instances_per_second"]
    total = sum(_work(p) for p in PATHS * 4)
    assert one == pytest.approx(len(PATHS * 4) / total)
    for r in rows[1:]:
        assert r["instances_per_second"] == pytest.approx(one * r["workers"], rel=0.05)
