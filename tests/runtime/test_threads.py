"""Thread backend alone: routing, session settings, stop and abort."""

import sys
import threading

from threadpoolctl import threadpool_info

from molpipe.runtime.message import Kind, Message
from molpipe.runtime.threads import ThreadBackend


class Echo:
    """A stand-in worker: answers every message with a RESULT naming itself."""

    def __init__(self, wid, gate=None):
        self.wid, self.gate, self.current, self.n_seen = wid, gate, None, 0

    def run(self, send, recv):
        while (msg := recv()).kind is not Kind.STOP:
            if self.gate is not None:
                self.gate.wait()
            self.n_seen += 1
            send(Message(Kind.RESULT, msg.key, msg.stage, worker=self.wid))


def test_routes_by_stage_and_worker_and_stops():
    workers = [Echo(0), Echo(1)]
    with ThreadBackend(workers, {"a": 0, "b": 1}) as be:
        be.send(Message(Kind.FORWARD, 1, "b"))
        be.send(Message(Kind.FORWARD, 2, "a"))
        be.send(Message(Kind.REPORT, 3, worker=1))
        got = {(m.key, m.worker) for m in (be.recv(2.0) for _ in range(3))}
        assert got == {(1, 1), (2, 0), (3, 1)}
        assert be.recv(0.01) is None
    assert be.alive() == []


def test_session_sets_and_restores_process_settings():
    be = ThreadBackend([], {}, switch_interval=1e-4)
    before = sys.getswitchinterval()
    blas_before = [lib["num_threads"] for lib in threadpool_info()]
    for _ in range(2):            # the BLAS libraries are found once, limited every session
        with be.session():
            assert abs(sys.getswitchinterval() - 1e-4) < 1e-9
            assert all(lib["num_threads"] == 1 for lib in threadpool_info())
        assert sys.getswitchinterval() == before
        assert [lib["num_threads"] for lib in threadpool_info()] == blas_before


def test_abort_skips_the_backlog():
    gate = threading.Event()
    worker = Echo(0, gate)
    be = ThreadBackend([worker], {"a": 0})
    be.start()
    for k in range(100):
        be.send(Message(Kind.FORWARD, k, "a"))
    be._abort.set()
    gate.set()
    assert be.abort(2.0) == []
    assert worker.n_seen <= 2    # at most the message it was on, not the other 98
