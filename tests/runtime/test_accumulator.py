"""Accumulators and update criteria, alone and inside a pipeline."""

import numpy as np
import pytest

from molpipe.runtime import Accumulator, CountOrStale, EveryN, Pipeline
from molpipe.runtime.accumulator import Atoms, Backlog, GradNorm, Never, parse_criterion

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


def test_atoms_counts_atoms_not_instances():
    acc = Accumulator(Atoms(100))
    acc.add(atoms=40)
    acc.add(atoms=59)
    assert acc.n == 2 and acc.atoms == 99 and not acc.ready()
    acc.add(atoms=1)
    assert acc.ready()
    acc.reset()
    assert acc.atoms == 0 and not acc.ready()
    with pytest.raises(ValueError):
        Atoms(0)


def test_gradnorm_waits_for_a_large_enough_mean_gradient_or_max_n():
    g = {"W": np.zeros((2, 2)), "b": np.zeros(3)}
    acc = Accumulator(GradNorm(1.0, max_n=4), grads=lambda: g)
    g["W"][0, 0], g["b"][0] = 3.0, 4.0                # sum of two gradients: norm 5
    acc.add()
    acc.add()
    assert acc.grad_norm() == pytest.approx(2.5) and acc.ready()
    g["W"][0, 0], g["b"][0] = 0.3, 0.4                # mean of two: norm 0.25 < 1
    assert not acc.ready()
    acc.add()
    acc.add()                                         # ... but the cap of 4 holds
    assert acc.ready()
    # the norm is of the mean gradient: it matches numpy's over every array
    rng = np.random.default_rng(0)
    g.update(W=rng.normal(size=(2, 2)), b=rng.normal(size=3))
    full = np.sqrt(np.sum(g["W"] ** 2) + np.sum(g["b"] ** 2)) / acc.n
    assert acc.grad_norm() == pytest.approx(full)
    assert Accumulator(GradNorm(1e-9)).grad_norm() == 0.0   # nothing gathered, no grads


def test_backlog_updates_when_nothing_waits_or_at_max_n():
    waiting = [3]
    acc = Accumulator(Backlog(3), pending=lambda: waiting[0])
    acc.add()
    assert not acc.ready()                 # busy: three messages wait
    waiting[0] = 0
    assert acc.ready()                     # idle: update now
    waiting[0] = 5
    acc.add()
    acc.add()
    assert acc.ready()                     # busy, but max_n reached


@pytest.mark.parametrize("text, expected", [
    ("count", EveryN(4)), ("atoms:400", Atoms(400)), ("gradnorm:0.5", GradNorm(0.5)),
    ("gradnorm:0.5:8", GradNorm(0.5, 8)), ("backlog:16", Backlog(16)), (" Atoms:3 ", Atoms(3))])
def test_text_forms(text, expected):
    assert parse_criterion(text, 4) == expected


@pytest.mark.parametrize("text", ["", "every", "atoms", "atoms:x", "atoms:0", "count:3",
                                  "gradnorm:-1", "gradnorm:nan", "gradnorm:1:2:3", "backlog"])
def test_a_bad_text_form_lists_the_choices(text):
    with pytest.raises(ValueError, match="count, atoms:N, gradnorm:X\\[:MAXN\\] or backlog:MAXN"):
        parse_criterion(text)


@pytest.mark.parametrize("criterion", ["atoms:20", "gradnorm:0.05:6", "backlog:4"])
def test_every_criterion_trains_the_toy_and_applies_fewer_updates(criterion):
    items = make_items(150, seed=31, atoms=8)
    stages, opts = make_net(seed=32, lr=0.05)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=4, criterion=criterion) as p:
        first = np.mean(list(p.run(items).loss.values()))
        for _ in range(6):
            last = np.mean(list(p.run(items).loss.values()))
        p.flush()
        leftover = [acc.n for w in p.workers for acc in w.acc.values()]
    assert last < 0.9 * first
    assert 0 < opts["embed"].n_steps < 7 * 150      # gathered several gradients per update
    assert leftover == [0] * len(leftover)


def test_atoms_criterion_counts_the_atoms_the_worker_saw():
    items = make_items(60, seed=33, atoms=5)
    stages, opts = make_net(seed=34)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=1, criterion="atoms:10") as p:
        p.run(items)
    total = sum(inst.n_atoms for _, inst, _ in items)
    # every update of embed gathered >= 10 atoms: there are at most total / 10 of them
    assert 0 < opts["embed"].n_steps <= total // 10
