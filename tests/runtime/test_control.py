"""Control node failure paths: a failing stage and a stalled stage stop the run, clearly."""

import time

import numpy as np
import pytest

from molpipe.runtime import Pipeline, PipelineError

from .conftest import worker_threads
from .toy import FIRST, make_items, make_net, route


def describe(key) -> str:
    return f"toy molecule #{key}"


def test_exception_in_stage_raises_naming_stage_worker_key_and_description():
    items = make_items(100, seed=2)
    stages, opts = make_net(seed=3)
    stages["head"].fail_keys.add(37)
    p = Pipeline(stages, opts, route, FIRST, max_active_keys=4, describe=describe)
    t0 = time.perf_counter()
    with p, pytest.raises(PipelineError) as err:
        p.run(items)
    assert time.perf_counter() - t0 < 3.0
    text = str(err.value)
    assert "'head'" in text and "worker 3" in text and "key 37" in text
    assert "toy molecule #37" in text and "toy failure at key 37" in text  # the traceback
    assert not worker_threads()
    with pytest.raises(RuntimeError):   # a failed pipeline refuses to run again
        p.run(items)


def test_exception_in_backward_is_reported_too():
    items = make_items(30, seed=2)
    stages, opts = make_net(seed=3)
    stages["loop"].backward = lambda *a: 1 / 0
    with Pipeline(stages, opts, route, FIRST, max_active_keys=2, describe=describe) as p:
        with pytest.raises(PipelineError, match="ZeroDivisionError") as err:
            p.run(items)
    assert "'loop'" in str(err.value)


@pytest.mark.slow
def test_stalled_stage_trips_the_watchdog_and_threads_end():
    items = make_items(60, seed=2)
    stages, opts = make_net(seed=3)
    stall = next(k for k, inst, _ in items if inst.n_rounds > 0 and k > 10)
    stages["loop"].stall_keys.add(stall)
    p = Pipeline(stages, opts, route, FIRST, max_active_keys=3, stall_timeout=0.5,
                 describe=describe)
    try:
        t0 = time.perf_counter()
        with pytest.raises(PipelineError) as err:
            p.run(items)
        elapsed = time.perf_counter() - t0
        text = str(err.value)
        assert "stalled" in text and "'loop'" in text and f"key {stall}" in text
        assert f"toy molecule #{stall}" in text
        assert elapsed < 0.5 + 3.0    # stall_timeout plus the abort's join timeout
        assert p.close() == [1]       # the loop worker is stuck in its stage
    finally:
        stages["loop"].release.set()
    deadline = time.monotonic() + 3.0
    while worker_threads() and time.monotonic() < deadline:
        time.sleep(0.01)
    assert not worker_threads()


def test_duplicate_keys_are_refused():
    items = make_items(3, seed=2)
    stages, opts = make_net(seed=3)
    with Pipeline(stages, opts, route, FIRST) as p:
        with pytest.raises(ValueError, match="unique"):
            p.run(items + items[:1])


@pytest.mark.parametrize("schedule", ["async", "sync"])
def test_items_are_drawn_from_an_iterator_only_as_they_are_admitted(schedule):
    """An iterator of items is read lazily: never more than max_active_keys + 1 drawn and
    not yet completed (the control node looks one ahead), and the run equals the list's."""
    items = make_items(80, seed=5, eval_every=7)
    drawn, completed, ahead = [0], [0], []

    def lazily():
        for item in items:
            drawn[0] += 1
            ahead.append(drawn[0] - completed[0])
            yield item

    def on_result(key, loss, pred):
        completed[0] += 1

    runs = []
    for source in (lazily(), list(items)):
        stages, opts = make_net(seed=3)
        with Pipeline(stages, opts, route, FIRST, max_active_keys=3, schedule=schedule) as p:
            runs.append((p.run(source, on_result), stages))
    assert drawn[0] == len(items) and max(ahead) <= 3 + 1
    (lazy, a), (whole, b) = runs
    assert sorted(lazy.loss) == sorted(whole.loss) == [k for k, _, _ in items]
    if schedule == "sync":           # sync is deterministic: the very same parameters
        assert all(np.array_equal(a[s].params[k], b[s].params[k]) for s in a for k in a[s].params)


def test_bad_configuration_is_refused():
    stages, opts = make_net(seed=3)
    with pytest.raises(ValueError, match="first"):
        Pipeline(stages, opts, route, "nope")
    with pytest.raises(ValueError, match="placement"):
        Pipeline(stages, opts, route, FIRST, placement={"embed": 0})
    with pytest.raises(ValueError, match="0..n-1"):
        Pipeline(stages, opts, route, FIRST, placement={s: 2 * i for i, s in enumerate(stages)})
    with pytest.raises(ValueError, match="schedule"):
        Pipeline(stages, opts, route, FIRST, schedule="lockstep")
    assert not worker_threads()


def test_control_node_alone_accepts_done_before_result():
    """Driven by a fake backend that answers in the order an MPI backend may deliver."""
    from collections import deque

    import numpy as np

    from molpipe.runtime.control import ControlNode
    from molpipe.runtime.message import Kind, Message
    from molpipe.runtime.schedule import AsyncSchedule

    inbox, admitted = deque(), []

    def send(msg):
        if msg.kind is Kind.REPORT:
            inbox.append(Message(Kind.STATS, worker=0, stats={
                "busy": 0.0, "trace": [], "n_updates": {}, "staleness": {}}))
            return
        admitted.append(msg.key)
        if msg.kind is Kind.FORWARD:
            inbox.append(Message(Kind.DONE, msg.key, "a", worker=0))
        inbox.append(Message(Kind.RESULT, msg.key, "z", payload={
            "loss": np.array([float(msg.key)]), "pred": np.zeros(1)}, worker=0))

    node = ControlNode(send, lambda timeout: inbox.popleft() if inbox else None, 1,
                       first="a", max_active_keys=2, schedule=AsyncSchedule(),
                       stall_timeout=0.1)
    res = node.run([(k, None, k % 2 == 0) for k in range(6)])
    assert admitted == list(range(6))
    assert res.loss == {k: float(k) for k in range(6)}
    assert sorted(res.train_keys) == [0, 2, 4] and sorted(res.eval_keys) == [1, 3, 5]
