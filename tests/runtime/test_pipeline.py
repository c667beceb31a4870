"""Pipeline end to end on the toy network: equivalence with the sequential references."""

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from molpipe.runtime import Pipeline

from .toy import FIRST, make_items, make_net, max_param_diff, reference, route


COLOCATED = {"embed": 0, "loop": 0, "gate": 1, "head": 1, "loss": 1}


@pytest.mark.parametrize("placement", [None, COLOCATED])
def test_async_mak1_muf1_reproduces_sequential_reference(placement):
    items = make_items(400, seed=3)
    assert {it[1].n_rounds for it in items} == {0, 1, 2, 3}      # loops, and skipped loops
    assert {it[1].gated for it in items} == {True, False}        # a skipped stage
    ref_stages, ref_opts = make_net(seed=7)
    ref_loss = reference(ref_stages, ref_opts, items, group=1)
    stages, opts = make_net(seed=7)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=1, placement=placement) as p:
        res = p.run(items)
    assert max_param_diff(stages, ref_stages) < 1e-9
    assert max(abs(res.loss[k] - ref_loss[k]) for k in ref_loss) < 1e-9
    assert max_param_diff(stages, make_net(seed=7)[0]) > 1e-2     # training did move them
    assert opts["loop"].n_steps == sum(it[1].n_rounds > 0 for it in items)
    assert opts["gate"].n_steps == sum(it[1].gated for it in items)


@pytest.mark.parametrize("mak,eval_every", [(2, 0), (5, 0), (4, 3)])
def test_sync_schedule_matches_group_mean_reference(mak, eval_every):
    items = make_items(203, seed=4, eval_every=eval_every)  # the last group is partial
    ref_stages, ref_opts = make_net(seed=8)
    reference(ref_stages, ref_opts, items, group=mak)
    stages, opts = make_net(seed=8)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=mak, schedule="sync") as p:
        res = p.run(items)
    assert max_param_diff(stages, ref_stages) < 1e-9
    assert res.n_in_flight_max == mak


@pytest.mark.parametrize("mak,muf", [(4, 1), (8, 3)])
def test_mak_bounds_flight_and_completes_everything_once(mak, muf):
    items = make_items(300, seed=5, eval_every=4)
    stages, opts = make_net(seed=9)
    seen = []
    placement = {"embed": 0, "loop": 1, "gate": 1, "head": 0, "loss": 2}
    with Pipeline(stages, opts, route, FIRST, max_active_keys=mak, min_update_frequency=muf,
                  placement=placement) as p:
        for epoch in range(2):   # workers persist between runs
            seen.clear()
            res = p.run(items, on_result=lambda k, loss, pred: seen.append(k))
            assert sorted(seen) == [k for k, _, _ in items]
            assert sorted(res.train_keys) == [k for k, _, t in items if t]
            assert sorted(res.eval_keys) == [k for k, _, t in items if not t]
            assert set(res.loss) == set(res.pred) == {k for k, _, _ in items}
            assert 1 < res.n_in_flight_max <= mak
            assert all(st.n_cached == 0 for st in stages.values())
        assert p.n_in_flight_max <= mak
    assert all(np.isfinite(v) for v in res.loss.values())


def test_evaluation_does_not_change_parameters():
    items = [(k, inst, False) for k, inst, _ in make_items(50, seed=6)]
    stages, opts = make_net(seed=10)
    before = make_net(seed=10)[0]
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4) as p:
        res = p.run(items)
    assert max_param_diff(stages, before) == 0.0
    assert all(o.n_steps == 0 for o in opts.values())
    assert len(res.eval_keys) == 50 and not res.train_keys


def test_training_reduces_loss():
    items = make_items(200, seed=11)
    stages, opts = make_net(seed=12, lr=0.05)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4) as p:
        first = np.mean(list(p.run(items).loss.values()))
        for _ in range(5):
            last = np.mean(list(p.run(items).loss.values()))
    assert last < 0.8 * first


@settings(max_examples=15, deadline=None)
@given(mak=st.integers(1, 9), muf=st.integers(1, 5), schedule=st.sampled_from(["async", "sync"]),
       n_workers=st.integers(1, 5), eval_every=st.sampled_from([0, 2, 7]), seed=st.integers(0, 99))
def test_any_configuration_completes_every_key_once(mak, muf, schedule, n_workers, eval_every,
                                                     seed):
    items = make_items(40, seed=seed, eval_every=eval_every)
    stages, opts = make_net(seed=seed)
    placement = {s: i % n_workers for i, s in enumerate(stages)}
    with Pipeline(stages, opts, route, FIRST, max_active_keys=mak, min_update_frequency=muf,
                  schedule=schedule, placement=placement, stall_timeout=10.0) as p:
        res = p.run(items)
    assert sorted(res.train_keys + res.eval_keys) == list(range(40))
    assert len(res.train_keys) == sum(t for _, _, t in items)
    assert res.n_in_flight_max <= mak
    assert all(st_.n_cached == 0 for st_ in stages.values())
    assert not any(w._version_at_fwd for w in p.workers)   # no worker-side record leaks


@pytest.mark.parametrize("budget", [6, 15])
def test_admission_by_atoms_never_exceeds_its_budget(budget):
    items = make_items(200, seed=13, atoms=6, eval_every=5)
    stages, opts = make_net(seed=14, delay=1e-4)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=8,
                  admission=f"atoms:{budget}") as p:
        sched = p.schedule
        seen, admitted = [], sched.admitted

        def record(train, atoms=1):
            admitted(train, atoms)
            seen.append((sched.atoms, sched.n))
        sched.admitted = record
        res = p.run(items)
    assert sorted(res.train_keys + res.eval_keys) == list(range(200))
    # every admission kept atoms in flight within the budget (or was alone in flight)
    assert all(atoms <= budget or n == 1 for atoms, n in seen)
    assert res.atoms_in_flight_max <= budget and max(n for _, n in seen) <= 8
    assert res.n_in_flight_max > 1                 # it did pipeline
    assert sched.atoms == 0 and sched.n == 0        # everything completed
