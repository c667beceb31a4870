"""Worker: a queue loop that runs its stages' forward and backward and updates them itself."""

from __future__ import annotations

import time
import traceback
from collections import deque
from dataclasses import replace
from contextlib import nullcontext
from typing import Any, Callable, Iterator

import numpy as np

from molpipe.runtime.accumulator import Accumulator, Criterion
from molpipe.runtime.message import DATA_KINDS, Kind, Message, n_atoms
from molpipe.runtime.nonfinite import (NonFiniteError, check_policy, describe_nonfinite,
                                       first_nonfinite)
from molpipe.runtime.stash import PredictedWeights, WeightStash

Route = Callable[[str, int, Any], "tuple[str, int] | None"]


def _last_visit(name: str, path) -> bool:
    """Whether an instance whose backward has ``path`` left to go ends its visits to ``name``
    here (the path holds no further step of that stage)."""
    return all(s != name for s, _ in path)

#: busy intervals a worker records per run at most (a timeline of the run's start; an
#: epoch over a million molecules would otherwise keep millions)
TRACE_MAX = 50_000


class Worker:
    """Hosts one or more stages, each with its optimizer and gradient accumulator.

    The worker's whole contract with a backend is ``run(send, recv)``: ``recv()`` blocks
    until the next message, ``send(msg)`` delivers one (the backend routes it by
    ``message.destination``), and ``recv.pending()``, where the backend gives it, tells how
    many messages wait (the ``Backlog`` criterion reads it). A worker never learns whether
    it lives in a thread or an MPI rank, and shares no mutable state with other workers:
    everything arrives in messages.

    ``predict_weights``: a training forward runs on weights extrapolated over the updates
    the stage is expected to make before that instance's backward (``PredictedWeights``):
    the running mean of the staleness its gradients showed, rounded; 0 at mak 1.
    """

    def __init__(self, wid: int, stages: dict, optimizers: dict,
                 criteria: dict[str, Criterion], route: Route, *,
                 auto_update: bool = True, record: bool = False, ordered: bool = False,
                 stash_weights: bool = False, on_nonfinite: str | None = None,
                 predict_weights: bool = False, replica: int = 0):
        self.wid = wid
        self.replica = replica            # the pipeline replica this worker belongs to
        self.stages = stages
        self.optimizers = optimizers
        self.acc = {name: Accumulator(criteria[name], grads=lambda st=st: st.grads)
                    for name, st in stages.items()}
        self._local: deque = deque()       # messages between hosted stages, not yet handled
        self.route = route
        self.auto_update = auto_update    # False under the sync schedule
        self.record = record              # keep a trace of the busy intervals (the first
                                          # TRACE_MAX of a run: memory flat in its length)
        self.trace: list[tuple] = []      # (t_start, t_end, key, stage, step, direction)
        self.busy = 0.0                   # seconds spent in stage calls and updates
        self._cpu_mark: float | None = None  # thread CPU seconds at the last report
        self.n_updates = {name: 0 for name in stages}
        self.staleness = {name: 0 for name in stages}  # largest since the last report
        self.current: tuple | None = None  # (stage, key, step, direction, t_start) while busy
        self._version_at_fwd: dict[tuple[str, Any], int] = {}
        # ``ordered``: every instance's gradients go to a buffer of their own and an update
        # sums the buffers in key order, so the result does not depend on thread timing
        # (the sync schedule is bit-for-bit reproducible with it)
        self.ordered = ordered
        self._open: dict[tuple[str, Any], dict] = {}
        self._done: dict[str, dict[Any, dict]] = {name: {} for name in stages}
        self.stash_weights, self.predict_weights = stash_weights, predict_weights
        if predict_weights:
            self.stash = {name: PredictedWeights(st, optimizers.get(name), stash_weights)
                          for name, st in stages.items()}
        else:
            # replicas: a shared optimizer's versions count every replica's updates
            self.stash = {name: (optimizers[name].stash_view(st)
                                 if hasattr(optimizers.get(name), "stash_view") else WeightStash(st))
                          for name, st in stages.items()} if stash_weights else None
        self.expected = {name: 0.0 for name in stages}  # running mean staleness per stage
        # NaN/inf in a training forward's outputs: None (not checked), "stop" or "skip"
        self.on_nonfinite = check_policy(on_nonfinite)
        # version -> {stage: (parameters, buffers)} copied at a PUBLISH, read by EVALs of that version
        self.published: dict[int, dict[str, dict]] = {}

    # -- the loop ----------------------------------------------------------------------
    def run(self, send: Callable[[Message], None], recv: Callable[[], Message]) -> None:
        """Serve messages until STOP; messages between hosted stages skip the queue."""
        self._cpu_mark = time.thread_time()
        local = self._local
        waiting = getattr(recv, "pending", None) or (lambda: 0)
        for acc in self.acc.values():
            acc.pending = lambda: len(local) + waiting()
        while True:
            msg = recv()
            if msg.kind is Kind.STOP:
                return
            local.append(msg)
            while local:
                m = local.popleft()
                try:
                    for out in self._handle(m):
                        if out.kind in DATA_KINDS and out.stage in self.stages:
                            local.append(out)
                        elif self.replica and out.kind in DATA_KINDS:
                            send(replace(out, replica=self.replica))
                        else:
                            send(out)
                except Exception:
                    send(Message(Kind.ERROR, m.key, m.stage, m.step, worker=self.wid,
                                 error=traceback.format_exc()))
            msg = m = out = None      # hold no instance while waiting for the next message

    def _handle(self, m: Message) -> Iterator[Message]:
        if m.kind is Kind.FORWARD or m.kind is Kind.EVAL:
            yield from self._forward(m)
        elif m.kind is Kind.BACKWARD and m.skip is not None:
            self._drop(m.stage, m.key, m.step)
            yield from self._pass_skip(m.stage, m.key, m.path, m.inst, m.skip)
        elif m.kind is Kind.BACKWARD:
            dx = self._run_backward(m.stage, m.key, m.step, m.payload, m.inst)
            yield from self._backward_done(m.stage, m.key, dx, m.path, m.inst, m.payload)
        elif m.kind is Kind.UPDATE:
            for name, acc in self.acc.items():
                if acc.n > 0:
                    self._update(name)
            yield Message(Kind.UPDATED, worker=self.wid)
        elif m.kind is Kind.REPORT:
            yield Message(Kind.STATS, worker=self.wid, stats=self._report())
        elif m.kind is Kind.PUBLISH:
            self.published[m.version] = {name: self._copy_params(name) for name in self.stages}
            yield Message(Kind.PUBLISHED, worker=self.wid, version=m.version)
        elif m.kind is Kind.RETIRE:
            self.published.pop(m.version, None)
        else:
            raise ValueError(f"worker {self.wid} cannot handle a {m.kind.value!r} message")

    def _copy_params(self, name: str) -> tuple[dict, dict]:
        """(parameters, buffers) an evaluation of ``name`` should see: the optimizer's
        average when it keeps one, else the live parameters (copied either way)."""
        stage = self.stages[name]
        avg = getattr(self.optimizers.get(name), "state", {}).get("avg")
        return ({k: (avg[k] if avg else p).copy() for k, p in stage.params.items()},
                {k: b.copy() for k, b in stage.buffers.items()})

    # -- forward, backward, update --------------------------------------------------------
    def _forward(self, m: Message) -> Iterator[Message]:
        train = m.kind is Kind.FORWARD
        stage = self.stages[m.stage]
        version = self.acc[m.stage].version
        if m.version is None:
            if train and self.stash is not None and not self.predict_weights:
                # before the forward reads them: under replicas another one may step meanwhile
                self.stash[m.stage].forward(m.key, m.step, version)
            ahead = round(self.expected[m.stage])
            with (self.stash[m.stage].forward(m.key, m.step, version, ahead)
                  if train and self.predict_weights else nullcontext()):
                y = self._timed(m.key, m.stage, m.step, m.kind.value,
                                stage.forward, m.key, m.step, m.payload, m.inst, train)
        else:                               # an evaluation on a published version
            copies = self.published.get(m.version)
            if copies is None:
                raise KeyError(f"worker {self.wid} holds no published version {m.version} "
                               f"(has {sorted(self.published)})")
            live = stage.params, stage.buffers
            stage.params, stage.buffers = copies[m.stage]
            try:
                y = self._timed(m.key, m.stage, m.step, m.kind.value,
                                stage.forward, m.key, m.step, m.payload, m.inst, False)
            finally:
                stage.params, stage.buffers = live
        path = m.path + ((m.stage, m.step),) if train else ()
        if train:
            self._version_at_fwd.setdefault((m.stage, m.key), version)
        check = train and self.on_nonfinite is not None and stage.nonfinite != 0
        bad = first_nonfinite(y, m.payload) if check else None
        if bad is not None:
            what = f"stage {m.stage!r} output {describe_nonfinite(bad, y[bad])}"
            if self.on_nonfinite == "stop":
                raise NonFiniteError(f"non-finite training forward: {what} "
                                     "(on_nonfinite='skip' skips such instances)")
            yield Message(Kind.RESULT, m.key, m.stage, m.step, {"loss": np.array([np.nan])},
                          worker=self.wid, skip=what)
            self._drop(m.stage, m.key, m.step)
            yield from self._pass_skip(m.stage, m.key, m.path, m.inst, what)
            return
        nxt = self.route(m.stage, m.step, m.inst)
        if nxt is not None:
            yield Message(m.kind, m.key, nxt[0], int(nxt[1]), y, path, m.inst,
                          version=m.version)
            return
        # loss stage: report, then start the backward at once
        yield Message(Kind.RESULT, m.key, m.stage, m.step, y, worker=self.wid)
        if train:
            dx = self._run_backward(m.stage, m.key, m.step, {}, m.inst)
            yield from self._backward_done(m.stage, m.key, dx, path[:-1], m.inst)

    def _drop(self, name: str, key, step: int) -> None:
        """Drop ``key``'s cache and stashed weights at ``(name, step)``: no backward runs."""
        try:
            self.stages[name].pop(key, step)
        except KeyError:
            pass
        if self.stash is not None:
            with self.stash[name].backward(key, step, self.acc[name].version):
                pass

    def _pass_skip(self, name: str, key, path, inst, why: str) -> Iterator[Message]:
        """Pass a skip back along ``path`` (no gradient, nothing counted); its DONE tells
        the control node ``why``."""
        if _last_visit(name, path):
            self._version_at_fwd.pop((name, key), None)
            self._open.pop((name, key), None)
        if path:
            prev, prev_step = path[-1]
            yield Message(Kind.BACKWARD, key, prev, prev_step, {}, path[:-1], inst, skip=why)
        else:
            yield Message(Kind.DONE, key, name, worker=self.wid, skip=why)

    def _backward_done(self, name: str, key, dx, path, inst, dy=None) -> Iterator[Message]:
        """Send the input gradient back along the path, then count and maybe update.

        A non-finite input gradient, or (at the instance's last visit) a non-finite gradient
        gathered for the stage's parameters, stops the run under ``on_nonfinite="stop"``
        (naming stage and key, before any update applies it) and under ``"skip"`` skips the
        instance from here on: the stage's gathered gradient is dropped (it holds the bad
        values; other instances' parts of it go too) and the rest of the path only drops caches.
        """
        last = _last_visit(name, path)
        if self.on_nonfinite is not None:
            why = self._nonfinite_gradient(name, dx, dy, last)
            if why is not None and self.on_nonfinite == "stop":
                raise NonFiniteError(f"non-finite training backward: {why} "
                                     "(on_nonfinite='skip' skips such instances)")
            if why is not None:
                self.stages[name].zero_grad()
                self._open.pop((name, key), None)
                yield from self._pass_skip(name, key, path, inst, why)
                return
        if path:         # the previous stage's backward can start before this update
            prev, step = path[-1]
            yield Message(Kind.BACKWARD, key, prev, step, dx, path[:-1], inst)
        if last:
            if self.ordered:
                self._done[name][key] = self._open.pop((name, key))
            acc = self.acc[name]
            stale = acc.version - self._version_at_fwd.pop((name, key))
            acc.add(stale, n_atoms(inst))
            self.staleness[name] = max(self.staleness[name], stale)
            self.expected[name] += 0.1 * (stale - self.expected[name])
            if self.auto_update and acc.ready():
                self._update(name)
        if not path:     # DONE after the first stage's update: an instance admitted next
            yield Message(Kind.DONE, key, name, worker=self.wid)   # (maybe on another
                                                                   # replica) sees it

    def _nonfinite_gradient(self, name: str, dx, dy, last: bool) -> str | None:
        """Why the backward of ``name`` made non-finite gradients (None when it did not).

        A stage whose kernels counted none (``Stage.nonfinite == 0``) is taken at its word.
        """
        if self.stages[name].nonfinite == 0:
            return None
        bad = first_nonfinite(dx, dy)
        if bad is not None:
            return f"stage {name!r} input gradient {describe_nonfinite(bad, dx[bad])}"
        grads = self.stages[name].grads       # (``key``'s own buffer when ``ordered``)
        bad = first_nonfinite(grads) if last else None
        if bad is not None:
            return f"stage {name!r} parameter gradient {describe_nonfinite(bad, grads[bad])}"
        return None

    def _run_backward(self, name: str, key, step: int, dy, inst):
        """The stage's backward for (key, step), on the right gradient buffer and weights."""
        stage = self._grads_for(name, key)
        if self.stash is None:
            return self._timed(key, name, step, "backward", stage.backward, key, step, dy, inst)
        with self.stash[name].backward(key, step, self.acc[name].version):
            return self._timed(key, name, step, "backward", stage.backward, key, step, dy, inst)

    def _grads_for(self, name: str, key):
        """The stage, its ``grads`` pointed at ``key``'s own buffer when ``ordered``."""
        stage = self.stages[name]
        if self.ordered:
            grads = self._open.get((name, key))
            if grads is None:
                grads = self._open[(name, key)] = {k: np.zeros_like(v) for k, v in stage.params.items()}
            stage.grads = grads
        return stage

    def _gather_in_key_order(self, name: str) -> None:
        """Sum the finished instances' buffers into ``stage.grads``, in key order."""
        stage, done = self.stages[name], self._done[name]
        try:
            keys = sorted(done)
        except TypeError:                      # keys of mixed types: arrival order
            keys = list(done)
        total = {k: np.zeros_like(v) for k, v in stage.params.items()}
        for key in keys:
            for k, g in done[key].items():
                total[k] += g
        stage.grads = total
        done.clear()

    def _update(self, name: str) -> None:
        """Step the stage's optimizer with the mean of its gathered gradients."""
        if self.ordered:
            self._gather_in_key_order(name)
        stage, acc = self.stages[name], self.acc[name]
        if self.stash is not None:
            self.stash[name].before_update(acc.version)
        self._timed(None, name, acc.version, "update",
                    self.optimizers[name].step, stage.grads, 1.0 / acc.n)
        stage.zero_grad()
        acc.reset()
        self.n_updates[name] += 1

    # -- bookkeeping --------------------------------------------------------------------
    def _timed(self, key, stage: str, step: int, direction: str, fn, *args):
        t0 = time.perf_counter()
        self.current = (stage, key, step, direction, t0)
        try:
            return fn(*args)
        finally:
            t1 = time.perf_counter()
            self.busy += t1 - t0
            self.current = None
            if self.record and len(self.trace) < TRACE_MAX:
                self.trace.append((t0, t1, key, stage, step, direction))

    def _report(self) -> dict:
        """Counters and trace since the last report (then reset)."""
        now = time.thread_time()
        cpu, self._cpu_mark = now - (self._cpu_mark if self._cpu_mark is not None else now), now
        out = {"busy": self.busy, "cpu": cpu, "trace": self.trace, "n_updates": dict(self.n_updates),
               "pending": {name: acc.n for name, acc in self.acc.items()},
               "staleness": self.staleness}
        self.busy, self.trace = 0.0, []
        self.staleness = {name: 0 for name in self.stages}
        return out
