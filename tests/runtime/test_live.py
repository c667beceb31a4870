"""The live pipeline on the toy network: it trains as the reference does, every evaluation
is computed with one published version, and a failing worker stops it cleanly."""

import threading
import time

import numpy as np
import pytest

from molpipe.runtime import Pipeline
from molpipe.runtime.live import LivePipeline

from .toy import FIRST, make_items, make_net, max_param_diff, reference, route


def toy_predict(params: dict, inst) -> float:
    """The toy network's forward with ``params`` ({stage: {name: array}})."""
    h = np.tanh(params["embed"]["W"] @ inst.x + params["embed"]["b"])
    for _ in range(inst.n_rounds):
        h = np.tanh(params["loop"]["U"] @ h + params["loop"]["c"])
    if inst.gated:
        h = h / (1.0 + np.exp(-params["gate"]["G"] @ h))
    return float(params["head"]["w"] @ h + params["head"]["b"][0])


class Feed:
    """Training instances handed out one by one; ``trained`` in completion order."""

    def __init__(self, items):
        self.items = list(items)
        self.lock = threading.Lock()
        self.trained: list = []
        self.done = threading.Event()

    def next(self):
        with self.lock:
            return self.items.pop(0) if self.items else None

    def completed(self, key, loss):
        self.trained.append(key)
        if not self.items:
            self.done.set()


def live(stages, opts, feed, mak=1, **kw):
    pipe = Pipeline(stages, opts, route, FIRST, max_active_keys=mak, weight_stashing=True)
    return LivePipeline(pipe, feed.next, on_trained=feed.completed, **kw)


def test_live_training_with_evaluations_between_is_the_reference_at_mak1():
    items = make_items(300, seed=3)
    ref_stages, ref_opts = make_net(seed=7)
    reference(ref_stages, ref_opts, items, group=1)
    stages, opts = make_net(seed=7)
    feed = Feed([(k, inst) for k, inst, _ in items])
    lp = live(stages, opts, feed, publish_every=0.002).start()
    probes = [inst for _, inst, _ in make_items(40, seed=9)]
    answers = [lp.evaluate(probes[i:i + 4]) for i in range(0, 40, 4)]
    assert feed.done.wait(30)
    for a in answers:
        version, preds = a.result(10)
        assert len(preds) == 4
    lp.stop()
    assert lp.error is None
    assert feed.trained == [k for k, _, _ in items]
    assert max_param_diff(stages, ref_stages) < 1e-9       # evaluations changed nothing
    assert lp.version >= 1


def test_every_evaluation_uses_one_published_version_while_training_runs():
    items = make_items(400, seed=5)
    stages, opts = make_net(seed=2, delay=2e-4)
    feed = Feed([(k, inst) for k, inst, _ in items])
    versions = {}

    def published(v):          # at the drain point the live parameters (the optimizers'
        # arrays: a stage's ``params`` may be swapped for an evaluation now) are version v's
        versions[v] = {s: {k: p.copy() for k, p in opt.params.items()} for s, opt in opts.items()}

    pipe = Pipeline(stages, opts, route, FIRST, max_active_keys=4, weight_stashing=True)
    lp = LivePipeline(pipe, feed.next, on_trained=feed.completed, on_publish=published,
                      publish_every=0.01, slots_while_serving=2).start()
    probes = [inst for _, inst, _ in make_items(8, seed=11)]
    got = []
    while not feed.done.is_set():
        got.append(lp.evaluate(probes).result(10))
    lp.stop()
    assert lp.error is None
    used = {v for v, _ in got}
    assert len(used) >= 3, f"training should publish several versions meanwhile: {used}"
    for version, preds in got:
        want = [toy_predict(versions[version], inst) for inst in probes]
        np.testing.assert_allclose(np.concatenate(preds), want, rtol=0, atol=1e-12)
    # the newest version is all the workers still hold (the others were retired)
    assert all(sorted(w.published) == [lp.version] for w in pipe.workers)


def test_at_drain_runs_with_nothing_in_flight_and_every_update_applied():
    items = make_items(200, seed=6)
    stages, opts = make_net(seed=4)
    feed = Feed([(k, inst) for k, inst, _ in items])
    lp = live(stages, opts, feed, mak=4, publish_every=0.05).start()
    seen = []
    while not feed.done.is_set():
        seen.append(lp.at_drain(lambda: (dict(lp.in_flight), len(feed.trained))).result(10))
    lp.stop()
    assert seen and all(flight["train"] == 0 for flight, _ in seen)
    assert [n for _, n in seen] == sorted(n for _, n in seen)


def test_a_failing_worker_stops_the_live_pipeline_and_fails_its_requests():
    items = make_items(100, seed=1)
    stages, opts = make_net(seed=1)
    stages["loop"].fail_keys.add(("t", 30))
    feed = Feed([(k, inst) for k, inst, _ in items])
    lp = live(stages, opts, feed, mak=2).start()
    lp.thread.join(20)
    assert not lp.thread.is_alive()
    assert "toy failure at key ('t', 30)" in str(lp.error)
    with pytest.raises(RuntimeError, match="pipeline has stopped"):
        lp.evaluate([items[0][1]]).result(5)
    lp.stop()


def test_idle_live_pipeline_answers_and_stops():
    stages, opts = make_net(seed=1)
    feed = Feed([])
    lp = live(stages, opts, feed).start()
    inst = make_items(1, seed=2)[0][1]
    t0 = time.perf_counter()
    version, preds = lp.evaluate([inst]).result(5)
    assert version == 0 and time.perf_counter() - t0 < 1.0
    params = {s: st.params for s, st in stages.items()}
    assert float(preds[0][0]) == pytest.approx(toy_predict(params, inst), abs=1e-12)
    lp.stop()
    assert not lp.thread.is_alive()


def test_a_requests_messages_overtake_queued_training_work():
    from molpipe.runtime.message import Kind, Message
    from molpipe.runtime.threads import _TwoLaneQueue

    q = _TwoLaneQueue(lambda m: m.version is not None)
    for k in range(3):
        q.put(Message(Kind.FORWARD, ("t", k)))
    q.put(Message(Kind.EVAL, ("e", 0), version=2))
    q.put(Message(Kind.EVAL, ("e", 1), version=2))
    assert [q.get().key for _ in range(5)] == [("e", 0), ("e", 1), ("t", 0), ("t", 1), ("t", 2)]
    for k in range(10):                         # a flood of requests: training still moves
        q.put(Message(Kind.EVAL, ("e", k), version=3))
    q.put(Message(Kind.FORWARD, ("t", 9)))
    assert [q.get().key for _ in range(6)][4] == ("t", 9)


def test_stop_waits_for_the_urgent_lane():
    """The burst rule lets other work through after a run of urgent messages; STOP, the last
    message a worker takes, must not: a RETIRE queued before it would be lost."""
    from molpipe.runtime.message import STOP, Kind, Message
    from molpipe.runtime.threads import _TwoLaneQueue

    q = _TwoLaneQueue(lambda m: m.version is not None, burst=2)
    for v in range(5):
        q.put(Message(Kind.RETIRE, version=v))
    q.put(STOP)
    got = [q.get() for _ in range(6)]
    assert [m.version for m in got[:5]] == list(range(5)) and got[5] is STOP
