"""Thread backend: each worker in a daemon thread, one queue per worker and one for control.

The seam every backend implements (an MPI backend moves the same messages between ranks):

- ``start()`` / ``stop(timeout)`` / ``abort(timeout)``: run, then end, the workers; the
  last two return the workers still alive after ``timeout`` seconds (empty when all ended);
  ``abort`` makes every worker leave its loop after its current message.
- ``send(msg)``: deliver a message, routed by ``message.destination``.
- ``recv(timeout) -> Message | None``: the control node's next message, None on timeout.
- a worker's ``recv`` may carry ``recv.pending()``: how many messages wait for it (the
  ``Backlog`` criterion reads it; without it a worker takes 0).
- ``session()``: a context manager around every ``run``: the process settings the
  workers need while messages flow (here: one BLAS thread, a short GIL switch interval).
- ``status()``: for each worker, ``(stage, key, step, direction, t_start)`` while busy,
  else None (diagnostics for the watchdog; a backend may return all None).

Workers only ever see the ``send`` and ``recv()`` (with its ``pending()``) handed to
``Worker.run``.
"""

from __future__ import annotations

import queue
import sys
import threading
import time
from collections import deque
from contextlib import contextmanager
from typing import Callable

from molpipe.kernels import one_blas_thread
from molpipe.runtime.message import CONTROL, STOP, Kind, Message, destination
from molpipe.runtime.worker import Worker


class ThreadBackend:
    """Runs workers in daemon threads of this process (numba and BLAS release the GIL)."""

    def __init__(self, workers: list[Worker], placement: dict[str, int], *,
                 switch_interval: float = 5e-4):
        self.workers = workers
        self.switch_interval = switch_interval
        self.placement = placement
        self._queues = [queue.SimpleQueue() for _ in workers]
        self._control: queue.SimpleQueue = queue.SimpleQueue()
        self._abort = threading.Event()
        self.threads: list[threading.Thread] = []

    def prioritize(self, urgent: Callable[[Message], bool]) -> None:
        """Before ``start``: messages for which ``urgent(msg)`` holds overtake the others in
        a worker's queue (FIFO among each kind), e.g. a live pipeline's prediction requests."""
        if self.threads:
            raise RuntimeError("prioritize before start")
        self._queues = [_TwoLaneQueue(urgent) for _ in self.workers]

    def send(self, msg: Message) -> None:
        d = destination(msg, self.placement)
        (self._control if d == CONTROL else self._queues[d]).put(msg)

    def recv(self, timeout: float | None = None) -> Message | None:
        try:
            return self._control.get(timeout=timeout)
        except queue.Empty:
            return None

    def _worker_recv(self, wid: int):
        q, abort = self._queues[wid], self._abort

        def recv() -> Message:
            return STOP if abort.is_set() else q.get()

        recv.pending = q.qsize              # messages waiting (the Backlog criterion)
        return recv

    def start(self) -> None:
        if self.threads:
            raise RuntimeError("backend already started")
        for w in self.workers:
            t = threading.Thread(target=w.run, args=(self.send, self._worker_recv(w.wid)),
                                 name=f"molpipe-worker-{w.wid}", daemon=True)
            t.start()
            self.threads.append(t)

    def stop(self, timeout: float = 5.0) -> list[int]:
        for q in self._queues:
            q.put(STOP)
        return self._join(timeout)

    def abort(self, timeout: float = 2.0) -> list[int]:
        self._abort.set()
        return self.stop(timeout)

    def _join(self, timeout: float) -> list[int]:
        deadline = time.monotonic() + timeout
        for t in self.threads:
            t.join(max(0.0, deadline - time.monotonic()))
        return [w.wid for w, t in zip(self.workers, self.threads) if t.is_alive()]

    @contextmanager
    def session(self):
        """One BLAS thread per worker, and a GIL switch interval short enough that a worker
        coming back from a GIL-free kernel does not wait out another's 5 ms time slice
        (measured: 1.1x -> 1.8x on 2 cores at mak=4, ``python -m molpipe.runtime.bench``)."""
        old = sys.getswitchinterval()
        sys.setswitchinterval(self.switch_interval)
        try:
            with one_blas_thread():
                yield
        finally:
            sys.setswitchinterval(old)

    def alive(self) -> list[int]:
        return [w.wid for w, t in zip(self.workers, self.threads) if t.is_alive()]

    def status(self) -> list[tuple | None]:
        return [w.current for w in self.workers]

    def __enter__(self) -> "ThreadBackend":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


class _TwoLaneQueue:
    """A worker's queue with an urgent lane served first (``put`` / blocking ``get``), but
    never more than ``burst`` urgent messages in a row while others wait: under a flood of
    requests the other lane still moves (training slows, it does not stop)."""

    def __init__(self, urgent: Callable[[Message], bool], burst: int = 4):
        self.urgent, self.burst = urgent, burst
        self._lanes = (deque(), deque())
        self._ready = threading.Condition(threading.Lock())
        self._run = 0                           # urgent messages served in a row

    def put(self, msg: Message) -> None:
        lane = self._lanes[0] if self.urgent(msg) else self._lanes[1]
        with self._ready:
            lane.append(msg)
            self._ready.notify()

    def qsize(self) -> int:
        return len(self._lanes[0]) + len(self._lanes[1])

    def get(self) -> Message:
        with self._ready:
            urgent, other = self._lanes
            while not (urgent or other):
                self._ready.wait()
            # STOP, last in its lane, also waits for the urgent lane: a worker that stops
            # has handled every message sent before it (a RETIRE, say)
            if urgent and not (other and self._run >= self.burst
                               and other[0].kind is not Kind.STOP):
                self._run += 1
                return urgent.popleft()
            self._run = 0
            return other.popleft()
