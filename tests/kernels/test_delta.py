"""bfloat16 deltas of the replica exchange: rounding, error feedback, and two exchanges over
an in-memory link ending exactly where the sum of their sent deltas says."""

import threading

import numpy as np
import pytest

from molpipe.kernels import delta
from molpipe.runtime import wire
from molpipe.runtime.deltas import TAG_DELTA, DeltaExchange


def test_encode_rounds_to_nearest_bfloat16_and_moves_base_by_what_was_sent():
    rng = np.random.default_rng(0)
    p = rng.normal(size=1500).astype(np.float32)
    base = (p - rng.normal(scale=1e-3, size=1500)).astype(np.float32)
    d = p - base
    base0, q = base.copy(), np.empty(1500, np.uint16)
    delta.encode(p, base, q)
    sent = delta.decode(q)
    np.testing.assert_array_equal(base, base0 + sent)
    # nearest: within half a bf16 unit (2^-8 relative), and no nearer bf16 value exists
    assert np.all(np.abs(sent - d) <= np.abs(d) * 2.0 ** -8)
    for step in (-1, 1):
        other = delta.decode((q.astype(np.int32) + step).astype(np.uint16))
        assert np.all(np.abs(other - d) >= np.abs(sent - d))
    # ties go to even: 1 + 2^-8 lies halfway between 1 and 1 + 2^-7
    q1 = np.empty(2, np.uint16)
    delta.encode(np.array([1 + 2.0 ** -8, 1 + 3 * 2.0 ** -8], np.float32), np.zeros(2, np.float32), q1)
    assert delta.decode(q1).tolist() == [1.0, 1 + 2 * 2.0 ** -7]


def test_the_rounding_error_goes_with_the_next_delta():
    rng = np.random.default_rng(1)
    p = rng.normal(size=300).astype(np.float32)
    p_init, base, total, q = p.copy(), p.copy(), np.zeros(300), np.empty(300, np.uint16)
    for _ in range(50):
        p += rng.normal(scale=1e-2, size=300).astype(np.float32)
        d = p - base                          # this round's change and the last error
        delta.encode(p, base, q)
        total += delta.decode(q)
        left = np.abs(p - base)               # only this round's error (and base's rounding)
        assert np.all(left <= np.abs(d) * 2.0 ** -8 + 2 * np.spacing(np.abs(p)))
    # sent in all: the whole change but for the last round's error, not 50 of them
    np.testing.assert_allclose(total + (p - base), p - p_init, rtol=0, atol=1e-5)


def test_add_moves_a_parameter_and_its_base_by_the_same_float32_delta():
    rng = np.random.default_rng(2)
    p, base = rng.normal(size=700).astype(np.float32), rng.normal(size=700).astype(np.float32)
    q = rng.integers(0x3000, 0x3C00, size=700).astype(np.uint16)  # modest positive values
    p0, b0 = p.copy(), base.copy()
    delta.add(p, base, q)
    np.testing.assert_array_equal(p, p0 + delta.decode(q))
    np.testing.assert_array_equal(base, b0 + delta.decode(q))


class _Req:
    """A send request done after ``lag`` of its tests: only then are its bytes delivered
    (what a frame reused too early would corrupt)."""

    def __init__(self, deliver=None, lag: int = 0):
        self.deliver, self.lag = deliver, lag

    def Test(self):
        if self.lag > 0:
            self.lag -= 1
            return False
        if self.deliver is not None:
            self.deliver()
            self.deliver = None
        return True

    def Wait(self):
        self.lag = 0
        return self.Test()


class _Link:
    """Two ranks' ends of an in-memory wire; with ``lag``, a frame's bytes are taken only
    when its send completes, ``lag`` tests after it was sent."""

    def __init__(self, boxes: dict, rank: int, lag: int = 0):
        self.boxes, self.rank, self.lag, self.reqs = boxes, rank, lag, []

    def send(self, dest, buf, tag):
        req = _Req(lambda: self.boxes[dest].append((tag, self.rank, buf.copy())), self.lag)
        self.reqs.append(req)
        if not self.lag:
            req.Test()
        return req

    def _take(self, tag):
        box = self.boxes[self.rank]
        for i, (t, src, buf) in enumerate(box):
            if t == tag:
                del box[i]
                return src, buf
        return None

    def poll(self, tag):
        got = self._take(tag)
        return None if got is None else (got[0], *wire.unpack(got[1]))

    def post(self, tag):
        got = self._take(tag)
        return None if got is None else (_Req(), got[0], got[1])

    def _reap(self):
        for req in self.reqs:
            req.Wait()
        self.reqs = []


class _Stage:
    def __init__(self, params):
        self.params = params


@pytest.mark.parametrize("lag", [0, 3])
def test_two_exchanges_send_half_the_bytes_and_end_at_the_start_plus_every_sent_delta(
        lag, monkeypatch):
    made = []
    monkeypatch.setattr(wire, "frame", lambda *a, _f=wire.frame: made.append(1) or _f(*a))
    rng = np.random.default_rng(3)
    start = {"W": rng.normal(size=(40, 30)).astype(np.float32),
             "b": rng.normal(size=30).astype(np.float32)}
    boxes = {0: [], 1: []}
    stages = [{"s": _Stage({k: v.copy() for k, v in start.items()})} for _ in range(2)]
    ex = [DeltaExchange(_Link(boxes, r, lag), [1 - r], stages[r], every=1, record=True)
          for r in range(2)]
    for e in ex:
        e.begin(1, 1)
    for step in range(40):
        for r in range(2):
            P = stages[r]["s"].params
            ex[r].poll()
            ex[r].apply("s")
            for k in P:                                        # a local optimizer step
                P[k] -= (0.01 * rng.normal(size=P[k].shape)).astype(np.float32)
            ex[r].stepped("s")
    # a frame is reused once its send has left: one a replica when sends leave at once;
    # while they lag, more, but fewer than half the 80 sends
    assert len(made) == 2 if lag == 0 else 2 < len(made) < 40, len(made)
    n_param_bytes = sum(v.nbytes for v in start.values())
    assert ex[0].stats["bytes_sent"] < 40 * (n_param_bytes // 2 + 256)   # bf16, not float32
    finished, stop = threading.Semaphore(0), threading.Event()

    def end(e):                               # each its own rank, which goes on progressing
        e.finish(5.0)                         # its sends after its own end (as a rank's
        finished.release()                    # serve loop does)
        while not stop.wait(1e-3):
            e.link._reap()

    ends = [threading.Thread(target=end, args=(e,)) for e in ex]
    for t in ends:
        t.start()
    for _ in ends:
        assert finished.acquire(timeout=10)
    stop.set()
    for t in ends:
        t.join()
    P0, P1 = stages[0]["s"].params, stages[1]["s"].params
    for k in start:
        expect = start[k] + ex[0].sent_sum["s"][k] + ex[1].sent_sum["s"][k]
        np.testing.assert_allclose(P0[k], expect, rtol=0, atol=2e-5)
        np.testing.assert_allclose(P1[k], P0[k], rtol=0, atol=2e-5)
        assert np.abs(P0[k] - start[k]).max() > 0.05          # they did move
