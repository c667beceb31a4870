"""Accumulators and update criteria, alone and inside a pipeline."""

import pytest

from molpipe.runtime import Accumulator, CountOrStale, EveryN, Pipeline
from molpipe.runtime.accumulator import Never

from .toy import FIRST, make_items, make_net, route


def test_every_n():
    acc = Accumulator(EveryN(3))
    states = []
    for _ in range(7):
        acc.add()
        states.append(acc.ready())
        if acc.ready():
            acc.reset()
    assert states == [False, False, True, False, False, True, False]
    assert acc.version == 2 and acc.n == 1
    with pytest.raises(ValueError):
        EveryN(0)


def test_count_or_stale_and_never():
    acc = Accumulator(CountOrStale(n=10, staleness=2))
    acc.add(staleness=1)
    assert not acc.ready()
    acc.add(staleness=2)
    assert acc.ready()
    acc.reset()
    assert acc.max_staleness == 0 and not acc.ready()   # nothing gathered: never ready
    acc = Accumulator(Never())
    for _ in range(100):
        acc.add()
    assert not acc.ready()


@pytest.mark.parametrize("muf", [1, 4])
def test_muf_steps_once_every_muf_instances(muf):
    items = make_items(103, seed=21)
    stages, opts = make_net(seed=22)
    visits = {"embed": 103, "head": 103, "loss": 103,
              "loop": sum(it[1].n_rounds > 0 for it in items),
              "gate": sum(it[1].gated for it in items)}
    with Pipeline(stages, opts, route, FIRST, max_active_keys=3,
                  min_update_frequency=muf) as p:
        res = p.run(items)
        for s, n in visits.items():
            assert opts[s].n_steps == n // muf, s
            assert res.n_updates[s] == n // muf
            assert opts[s].scales == [1.0 / muf] * (n // muf)
        p.flush()                                        # the leftovers are applied
    for s, n in visits.items():
        assert opts[s].n_steps == -(-n // muf), s
        if n % muf:
            assert opts[s].scales[-1] == 1.0 / (n % muf)


def test_per_stage_criterion():
    items = make_items(40, seed=23)
    stages, opts = make_net(seed=24)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=2,
                  criterion={"embed": EveryN(10)}) as p:
        p.run(items)
    assert opts["embed"].n_steps == 4 and opts["head"].n_steps == 40


def test_staleness_is_zero_at_mak1_and_positive_when_pipelined():
    items = make_items(120, seed=25)
    for mak, stale in [(1, False), (8, True)]:
        stages, opts = make_net(seed=26)
        with Pipeline(stages, opts, route, FIRST, max_active_keys=mak) as p:
            res = p.run(items)
        assert set(res.staleness) == set(stages)
        assert (max(res.staleness.values()) > 0) == stale
        assert res.staleness["loss"] == 0           # its backward follows its forward at once
