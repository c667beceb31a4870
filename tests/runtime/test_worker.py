"""A worker alone, driven by a plain list of messages: no threads, no backend."""

from collections import deque

import numpy as np

from molpipe.runtime.accumulator import EveryN
from molpipe.runtime.message import STOP, Kind, Message
from molpipe.runtime.worker import Worker

from .toy import ToyInst, make_net, route

INST = ToyInst(np.array([0.1, -0.2, 0.3]), 0.5, n_rounds=3, gated=False)


def drive(worker, inbox):
    """Run ``worker`` over ``inbox`` then STOP; return what it sent."""
    sent, queue = [], deque(inbox + [STOP])
    worker.run(sent.append, queue.popleft)
    return sent


def test_colocated_stages_skip_the_queue_and_backward_retraces_the_path():
    stages, opts = make_net(seed=1)
    w = Worker(0, {s: stages[s] for s in ("embed", "loop")},
               {s: opts[s] for s in ("embed", "loop")},
               {s: EveryN(1) for s in stages}, route, record=True)
    (out,) = drive(w, [Message(Kind.FORWARD, "k", "embed", 0, {}, (), INST)])
    assert (out.kind, out.stage, out.step) == (Kind.FORWARD, "head", 0)
    assert out.path == (("embed", 0), ("loop", 0), ("loop", 1), ("loop", 2))
    assert stages["loop"].n_cached == 3 and stages["embed"].n_cached == 1
    dy = Message(Kind.BACKWARD, "k", "loop", 2, {"h": np.ones(5)}, out.path[:-1], INST)
    (done,) = drive(w, [dy])
    assert done.kind is Kind.DONE and done.key == "k" and done.worker == 0
    assert stages["loop"].n_cached == 0 and stages["embed"].n_cached == 0
    # one update per stage: the loop counted the instance once, after its last visit
    assert opts["loop"].n_steps == 1 and opts["embed"].n_steps == 1
    visits = [(e[3], e[4], e[5]) for e in w.trace]
    assert visits == [("embed", 0, "forward"), ("loop", 0, "forward"), ("loop", 1, "forward"),
                      ("loop", 2, "forward"), ("loop", 2, "backward"), ("loop", 1, "backward"),
                      ("loop", 0, "backward"), ("loop", 0, "update"),
                      ("embed", 0, "backward"), ("embed", 0, "update")]


def test_loss_stage_reports_then_starts_backward():
    stages, opts = make_net(seed=1)
    w = Worker(4, {"loss": stages["loss"]}, {"loss": opts["loss"]}, {"loss": EveryN(1)}, route)
    path = (("embed", 0), ("head", 0))
    res, back = drive(w, [Message(Kind.FORWARD, 7, "loss", 0, {"pred": np.array([2.0])},
                                  path, INST)])
    assert res.kind is Kind.RESULT and res.payload["loss"][0] == 0.5 * 1.5 ** 2
    assert (back.kind, back.stage, back.path) == (Kind.BACKWARD, "head", (("embed", 0),))
    np.testing.assert_allclose(back.payload["pred"], [1.5])


def test_eval_caches_nothing_and_errors_become_messages():
    stages, opts = make_net(seed=1)
    w = Worker(0, {"embed": stages["embed"]}, {"embed": opts["embed"]},
               {"embed": EveryN(1)}, route)
    stages["embed"].fail_keys.add("bad")
    sent = drive(w, [Message(Kind.EVAL, "a", "embed", 0, {}, (), INST),
                     Message(Kind.FORWARD, "bad", "embed", 0, {}, (), INST),
                     Message(Kind.REPORT, worker=0)])
    assert sent[0].kind is Kind.EVAL and sent[0].path == () and stages["embed"].n_cached == 0
    assert sent[1].kind is Kind.ERROR and sent[1].key == "bad" and sent[1].stage == "embed"
    assert "toy failure" in sent[1].error
    assert sent[2].kind is Kind.STATS and sent[2].stats["busy"] > 0   # still serving


def test_update_message_steps_only_stages_with_gradients():
    stages, opts = make_net(seed=1)
    names = ("embed", "loop", "gate")
    w = Worker(0, {s: stages[s] for s in names}, {s: opts[s] for s in names},
               {s: EveryN(1) for s in names}, route, auto_update=False)
    (fwd,) = drive(w, [Message(Kind.FORWARD, 1, "embed", 0, {}, (), INST)])
    drive(w, [Message(Kind.BACKWARD, 1, "loop", 2, {"h": np.ones(5)}, fwd.path[:-1], INST)])
    assert all(opts[s].n_steps == 0 for s in names)
    (ack,) = drive(w, [Message(Kind.UPDATE, worker=0)])
    assert ack.kind is Kind.UPDATED
    assert [opts[s].n_steps for s in names] == [1, 1, 0]   # gate was skipped: not stepped


def _embed_worker(nonfinite, poison: bool):
    """A worker hosting the toy embed stage, which reports ``nonfinite`` as its own count
    and (``poison``) makes a NaN output."""
    stages, opts = make_net(seed=1)
    embed = stages["embed"]
    forward = embed.forward

    def counted_forward(key, step, x, inst, train):
        y = forward(key, step, x, inst, train)
        if poison:
            y["h"][0] = np.nan
        embed.nonfinite = nonfinite
        return y

    embed.forward = counted_forward
    return Worker(0, {"embed": embed}, {"embed": opts["embed"]}, {"embed": EveryN(1)}, route,
                  on_nonfinite="stop")


def test_a_stage_that_counted_no_nonfinite_values_is_taken_at_its_word():
    # the worker does not scan again what the stage's kernels counted as they wrote it
    (out,) = drive(_embed_worker(0, poison=True), [Message(Kind.FORWARD, "k", "embed", 0, {}, (), INST)])
    assert out.kind is Kind.FORWARD and np.isnan(out.payload["h"][0])


def test_a_count_above_zero_or_no_count_sends_the_worker_looking():
    for nonfinite in (None, 3):
        (err,) = drive(_embed_worker(nonfinite, poison=True),
                       [Message(Kind.FORWARD, "k", "embed", 0, {}, (), INST)])
        assert err.kind is Kind.ERROR and "stage 'embed' output 'h' holds 1 NaN" in err.error
    # a count the worker cannot confirm (finite outputs) passes
    (out,) = drive(_embed_worker(2, poison=False), [Message(Kind.FORWARD, "k", "embed", 0, {}, (), INST)])
    assert out.kind is Kind.FORWARD
