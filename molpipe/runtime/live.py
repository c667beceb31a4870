"""The live pipeline: one started ``Pipeline`` run without end, training and evaluating at once.

``ControlNode.run`` pumps a finite list of instances and returns. A ``LivePipeline`` keeps
the same workers going for as long as it lives: a loop thread (the control node's part)
admits training instances from a source whenever a training slot is free, and evaluation
requests from other threads the moment they arrive. An evaluation never sees weights from
two versions: every ``publish_every`` seconds of training the loop stops admitting
training, lets the instances in flight finish, makes every worker apply what it gathered,
and asks every worker to copy its parameters as version ``v + 1`` (``Kind.PUBLISH``); a
request is computed with the newest version at its arrival, at every stage (``Message.
version``), and a version no request uses any more is dropped (``Kind.RETIRE``). The
moment after a publish is also the loop's drain point: callbacks queued with ``at_drain``
run there, where no training instance is in flight and every update is applied (a
consistent state to save). While an evaluation runs at a stage, that stage's ``params``
is its published copy: a reader in another thread takes the live parameters from the
optimizers' arrays (``Optimizer.params``) or a version's copies from ``published``.

Rate control: while urgent evaluations (a client waits for them) are in flight, at most
``slots_while_serving`` training instances are admitted, and their messages overtake
training messages in every worker's queue, so that they do not wait behind a full pipeline
of training work; otherwise up to ``max_active_keys`` train.
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from concurrent.futures import Future
from typing import Any, Callable

import numpy as np

from molpipe.runtime.control import PipelineError
from molpipe.runtime.message import Kind, Message
from molpipe.runtime.trace import utilization

#: (key, instance) of the next training instance, or None when there is nothing to train
TrainSource = Callable[[], "tuple[Any, Any] | None"]


class LivePipeline:
    """Trains on ``next_train()``'s instances and evaluates requests, both through ``pipeline``.

    Parameters
    ----------
    pipeline : Pipeline                 not yet started; its workers are this loop's
    next_train : () -> (key, inst) | None
                                        the next training instance (called from the loop)
    on_trained : (key, loss) -> None    a training instance completed (its backward too)
    on_publish : (version) -> None      a version was published (called at the drain point,
                                        before the ``at_drain`` callbacks)
    publish_every : float               seconds of training between published versions
    slots_while_serving : int           training instances in flight while requests are
    report_every : float                seconds between the workers' utilization reports
    first_version : int                 number of the version published at the start (a
                                        service resumed from a snapshot goes on counting)
    prioritize_requests : bool          thread backend: a request's messages overtake
                                        training messages in every worker's queue
    """

    def __init__(self, pipeline, next_train: TrainSource, *,
                 on_trained: Callable[[Any, float], None] | None = None,
                 on_publish: Callable[[int], None] | None = None,
                 publish_every: float = 0.5, slots_while_serving: int = 1,
                 report_every: float = 2.0, first_version: int = 0,
                 prioritize_requests: bool = True):
        self.pipeline = pipeline
        self.control = pipeline.control
        self.next_train, self.on_trained, self.on_publish = next_train, on_trained, on_publish
        self.publish_every, self.report_every = publish_every, report_every
        self.mak = self.control.mak
        self._first = first_version
        self.prioritize_requests = prioritize_requests
        self.slots_while_serving = max(1, min(slots_while_serving, self.mak))
        self.n_workers = self.control.n_workers
        self._lock = threading.Lock()
        self._requests: deque = deque()         # (insts, future, urgent) from any thread
        self._at_drain: deque = deque()         # (fn, future)
        self._keys = itertools.count()
        self._stop = threading.Event()
        self._started = threading.Event()
        self.thread: threading.Thread | None = None
        self.error: BaseException | None = None
        # the loop's state, read by other threads only through ``status``
        self.version = first_version - 1        # newest published version
        self.n_trained = 0                      # training instances completed
        self.n_evaluated = 0                    # evaluation instances completed
        self.in_flight = {"train": 0, "eval": 0}
        self.utilization: dict[int, float] = {}
        # the loop thread's own
        self._evals: dict = {}                  # key -> (request, index) of an evaluation
        self._n_urgent = 0                      # of them, urgent ("e") evaluations
        self._flight_train: set = set()
        self._owed: dict = {}                   # training key -> messages still owed
        self._losses: dict = {}
        self._refs: dict[int, int] = {}         # version -> evaluation instances using it
        self._awaiting = 0                      # UPDATED / PUBLISHED acknowledgements
        self._stats_due = 0
        self._busy: dict[int, float] = {}
        self._report_t0 = self._report_t1 = 0.0
        self._draining = False
        self._published_at = -1                 # n_trained at the last publish

    # -- from any thread -------------------------------------------------------------------
    def start(self) -> "LivePipeline":
        prioritize = getattr(self.pipeline.backend, "prioritize", None)
        if prioritize is not None and self.prioritize_requests:
            # a request's messages overtake queued training work (and a PUBLISH, which
            # must reach a worker before the requests of its version, rides with them)
            prioritize(_urgent)
        self.pipeline.start()
        self.thread = threading.Thread(target=self._main, name="molpipe-live", daemon=True)
        self.thread.start()
        while self.version < self._first and self.thread.is_alive():
            self._started.wait(0.05)            # version 0 is published before any request
        return self

    def evaluate(self, insts: list, urgent: bool = True) -> Future:
        """A future of ``(version, [pred of every instance])``: all computed with one
        published version, the newest when the loop admits the request. ``urgent=False``:
        bookkeeping no client waits for (it neither overtakes training nor slows it)."""
        future: Future = Future()
        if self.error is not None or self._stop.is_set():
            future.set_exception(self._dead())
            return future
        with self._lock:
            self._requests.append((list(insts), future, urgent))
        self._wake()
        return future

    def at_drain(self, fn: Callable[[], Any]) -> Future:
        """Run ``fn()`` in the loop thread at the next drain point; a future of its result."""
        future: Future = Future()
        if self.error is not None or self._stop.is_set():
            future.set_exception(self._dead())
            return future
        with self._lock:
            self._at_drain.append((fn, future))
        self._wake()
        return future

    def published(self, version: int) -> dict[str, dict]:
        """{stage: (parameters, buffers)} of a published version, as the workers copied it
        (thread backend; valid in ``on_publish`` and ``at_drain`` callbacks of that version)."""
        out: dict[str, tuple] = {}
        for w in self.pipeline.workers:
            out.update(w.published[version])
        return out

    def wake(self) -> None:
        """Tell the loop that ``next_train`` may have something new."""
        self._wake()

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the instances in flight, apply every update, stop the workers."""
        self._stop.set()
        self._wake()
        if self.thread is not None:
            self.thread.join(timeout)
        self.pipeline.close()

    def _wake(self) -> None:
        self.pipeline.backend.send(Message(Kind.WAKE))

    def _dead(self) -> Exception:
        if self.error is not None:
            return RuntimeError(f"the pipeline has stopped: {self.error}")
        return RuntimeError("the pipeline is stopping")

    # -- the loop thread -------------------------------------------------------------------
    def _main(self) -> None:
        try:
            with self.pipeline.backend.session():
                self._loop()
        except BaseException as exc:           # a failing worker ends the loop cleanly
            self.error = exc
            self.pipeline.backend.abort()
            self.pipeline._state = "failed"
        finally:
            self._fail_waiting()

    def _fail_waiting(self) -> None:
        err = self._dead()
        with self._lock:
            waiting = [r[:2] for r in self._requests] + list(self._at_drain)
            self._requests.clear()
            self._at_drain.clear()
        for _, future in waiting:
            if not future.done():
                future.set_exception(err)
        for req, _ in list(self._evals.values()):
            if not req["future"].done():
                req["future"].set_exception(err)

    def _loop(self) -> None:
        final = False                           # stopping, and the last drain point is past
        self._publish()                         # the first version: the parameters as they start
        trained_since = 0.0                     # training seconds since the last publish
        t_mark = time.perf_counter()
        t_report = self._report_t1 = last_msg = t_mark
        while True:
            now = time.perf_counter()
            if self._flight_train and not self._draining:
                trained_since += now - t_mark
            t_mark = now
            stopping = self._stop.is_set()
            self._admit_requests()
            if not self._draining and not final and (stopping or self._at_drain
                                                     or trained_since >= self.publish_every):
                self._draining = True
            if self._draining and not self._flight_train and not self._awaiting:
                self._drain_point()
                trained_since = 0.0
                final = stopping
            if final and not self._evals and not self._awaiting and not self._stats_due:
                return
            if not self._draining and not final:
                self._admit_training()
            if (not self._flight_train and not self._draining and not final
                    and self.n_trained != self._published_at):
                self._draining = True           # training went idle: publish what it made
                continue
            if now - t_report >= self.report_every and not self._stats_due:
                self._ask_reports()
                t_report = now
            busy = bool(self._flight_train or self._evals or self._awaiting or self._stats_due)
            msg = self.pipeline.backend.recv(self.control.stall_timeout if busy else 1.0)
            if msg is None:
                if busy and time.perf_counter() - last_msg >= self.control.stall_timeout:
                    self.control._next({**{k: True for k in self._flight_train},
                                        **{k: False for k in self._evals}})   # raises
                continue
            last_msg = time.perf_counter()
            self._handle(msg)

    # admission -------------------------------------------------------------------------
    def _admit_requests(self) -> None:
        with self._lock:
            requests = list(self._requests)
            self._requests.clear()
        for insts, future, urgent in requests:
            if not future.set_running_or_notify_cancel():
                continue
            version = self.version
            req = {"future": future, "version": version, "preds": [None] * len(insts),
                   "left": len(insts)}
            if not insts:
                future.set_result((version, []))
                continue
            for i, inst in enumerate(insts):
                key = ("e" if urgent else "b", next(self._keys))
                self._evals[key] = (req, i)
                self._n_urgent += urgent
                self._refs[version] = self._refs.get(version, 0) + 1
                self.pipeline.backend.send(Message(Kind.EVAL, key, self.control.first, 0, {},
                                                   (), inst, version=version))
        self.in_flight["eval"] = len(self._evals)

    def _admit_training(self) -> None:
        # (requests that arrived meanwhile are admitted at the top of the next iteration)
        limit = self.slots_while_serving if self._n_urgent else self.mak
        while len(self._flight_train) < limit:
            item = self.next_train()
            if item is None:
                break
            key, inst = item
            key = ("t", key)
            self._flight_train.add(key)
            self._owed[key] = 2
            self.pipeline.backend.send(Message(Kind.FORWARD, key, self.control.first, 0, {},
                                               (), inst))
        self.in_flight["train"] = len(self._flight_train)

    # drain points and versions --------------------------------------------------------------
    def _drain_point(self) -> None:
        """No training in flight: apply every update, publish a version (when something
        was trained since the last), run the callbacks."""
        if self.n_trained != self._published_at:
            self._flush()
            self._publish()
        with self._lock:
            calls = list(self._at_drain)
            self._at_drain.clear()
        for fn, future in calls:
            if future.set_running_or_notify_cancel():
                try:
                    future.set_result(fn())
                except BaseException as exc:    # the caller gets it; the loop goes on
                    future.set_exception(exc)
        self._draining = False

    def _flush(self) -> None:
        for w in range(self.n_workers):
            self.pipeline.backend.send(Message(Kind.UPDATE, worker=w))
        self._awaiting += self.n_workers
        self._wait_acks()

    def _publish(self) -> None:
        version = self.version + 1
        for w in range(self.n_workers):
            self.pipeline.backend.send(Message(Kind.PUBLISH, worker=w, version=version))
        self._awaiting += self.n_workers
        self._wait_acks()
        old, self.version = self.version, version
        self._published_at = self.n_trained
        if old >= self._first and not self._refs.get(old):
            self._retire(old)
        self._started.set()
        if self.on_publish is not None:
            self.on_publish(version)

    def _retire(self, version: int) -> None:
        self._refs.pop(version, None)
        for w in range(self.n_workers):
            self.pipeline.backend.send(Message(Kind.RETIRE, worker=w, version=version))

    def _wait_acks(self) -> None:
        """Handle messages until every UPDATED / PUBLISHED asked for has come."""
        while self._awaiting:
            self._handle(self.control._next({}))

    def _ask_reports(self) -> None:
        for w in range(self.n_workers):
            self.pipeline.backend.send(Message(Kind.REPORT, worker=w))
        self._stats_due = self.n_workers
        self._report_t0, self._report_t1 = self._report_t1, time.perf_counter()
        self._busy = {}

    # messages ---------------------------------------------------------------------------
    def _handle(self, msg: Message) -> None:
        kind = msg.kind
        if kind is Kind.WAKE:
            return
        if kind is Kind.ERROR:
            raise self.control.worker_error(msg)
        if kind is Kind.UPDATED or kind is Kind.PUBLISHED:
            self._awaiting -= 1
        elif kind is Kind.STATS:
            self._stats(msg)
        elif kind is Kind.RESULT and msg.key in self._evals:
            self._eval_result(msg)
        elif kind is Kind.RESULT and msg.key in self._flight_train:
            self._losses[msg.key] = float(np.asarray(msg.payload["loss"]).reshape(-1)[0])
            self._owe(msg.key)
        elif kind is Kind.DONE and msg.key in self._flight_train:
            self._owe(msg.key)
        else:
            raise PipelineError(f"live pipeline got an unexpected {kind.value!r} "
                                f"for key {msg.key!r}")

    def _owe(self, key) -> None:
        self._owed[key] -= 1
        if self._owed[key]:
            return
        del self._owed[key]
        self._flight_train.discard(key)
        self.in_flight["train"] = len(self._flight_train)
        self.n_trained += 1
        loss = self._losses.pop(key, float("nan"))
        if self.on_trained is not None:
            self.on_trained(key[1], loss)

    def _eval_result(self, msg: Message) -> None:
        req, i = self._evals.pop(msg.key)
        self._n_urgent -= msg.key[0] == "e"
        self.in_flight["eval"] = len(self._evals)
        self.n_evaluated += 1
        req["preds"][i] = msg.payload.get("pred")
        req["left"] -= 1
        version = req["version"]
        self._refs[version] -= 1
        if not self._refs[version] and version != self.version:
            self._retire(version)
        if not req["left"]:
            req["future"].set_result((version, req["preds"]))

    def _stats(self, msg: Message) -> None:
        self._busy[msg.worker] = msg.stats["busy"]
        self._stats_due -= 1
        if not self._stats_due:
            wall = self._report_t1 - self._report_t0
            self.utilization = utilization(self._busy, wall) if wall > 0 else {}


def _urgent(msg: Message) -> bool:
    """A request's messages ("e" evaluations, not the background's "b"), and the control
    messages of a drain point (sent with no training in flight, so nothing they overtake
    depends on them)."""
    if msg.kind is Kind.EVAL:
        return msg.key[0] == "e"
    return msg.kind in _CONTROL


_CONTROL = frozenset({Kind.PUBLISH, Kind.RETIRE, Kind.UPDATE, Kind.REPORT})

__all__ = ["LivePipeline"]
