"""Control node: admits instances, tracks them in flight, collects results, runs the watchdog."""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from functools import cached_property
from typing import Any, Callable, Iterable

import numpy as np

from molpipe.runtime.message import Kind, Message, n_atoms
from molpipe.runtime.replicas import pick_replica
from molpipe.runtime.trace import utilization


class PipelineError(RuntimeError):
    """A worker failed or the pipeline stalled; the message (one line) names worker, stage
    and key; ``details`` holds the failing worker's traceback or the full stall report."""

    def __init__(self, message: str, details: str = ""):
        super().__init__(message)
        self.details = details


@dataclass
class RunResult:
    """What one ``run`` returns.

    Fields
    ------
    loss : dict[key, float]        loss of every instance (training and evaluation)
    pred : dict[key, ndarray]      prediction of every instance
    train_keys : list              keys trained on, in completion order
    eval_keys : list               keys only evaluated, in completion order
    wall : float                   seconds from first admission to the last worker report
    n_in_flight_max : int          most instances in flight at once
    atoms_in_flight_max : int      most atoms in flight at once (an instance without an
                                   ``n_atoms`` counts one)
    n_updates : dict[str, int]     optimizer steps of every stage so far (all runs)
    staleness : dict[str, int]     largest staleness of a gradient of every stage during
                                   this run (updates between an instance's forward and its
                                   backward at that stage; 0 = never stale)
    busy : dict[int, float]        seconds every worker was busy during this run (wall time
                                   inside its stage calls and updates)
    cpu : dict[int, float]         CPU seconds of every worker's thread (or rank) during this
                                   run: below ``busy`` when the OS ran something else on its
                                   core meanwhile, above when its own messages cost much
    trace : list[tuple]            (worker, t_start, t_end, key, stage, step, direction),
                                   times in seconds from the start of the run (merged from
                                   ``reports`` when first read: a run whose timeline nobody
                                   reads does not pay for it)
    reports : list[tuple]          (worker, [(t_start, t_end, key, stage, step, direction)])
                                   as the workers reported them (``perf_counter`` times)
    t0 : float                     ``perf_counter`` time of the run's start
    skipped : dict[key, str]       training instances skipped for non-finite values, and why
                                   (their loss is NaN; they added no gradient, or lost it: see
                                   ``nonfinite``)
    """

    loss: dict = field(default_factory=dict)
    pred: dict = field(default_factory=dict)
    train_keys: list = field(default_factory=list)
    eval_keys: list = field(default_factory=list)
    wall: float = 0.0
    n_in_flight_max: int = 0
    atoms_in_flight_max: int = 0
    n_updates: dict = field(default_factory=dict)
    staleness: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)
    busy: dict = field(default_factory=dict)
    reports: list = field(default_factory=list)
    t0: float = 0.0
    skipped: dict = field(default_factory=dict)

    @cached_property
    def trace(self) -> list[tuple]:
        out = [(w, a - self.t0, b - self.t0, *rest) for w, entries in self.reports
               for a, b, *rest in entries]
        out.sort(key=lambda e: e[1])
        return out

    @property
    def utilization(self) -> dict[int, float]:
        """Busy fraction of the run's wall time, per worker."""
        return utilization(self.busy, self.wall)


Item = tuple[Any, Any, bool]  # (key, inst, train)


class ControlNode:
    """Pumps instances through the workers with at most ``max_active_keys`` in flight."""

    def __init__(self, send: Callable[[Message], None], recv: Callable, n_workers: int, *,
                 first: str, max_active_keys: int, schedule, stall_timeout: float,
                 describe: Callable[[Any], str] | None = None,
                 status: Callable[[], list] | None = None, replicas: int = 1):
        if max_active_keys < 1:
            raise ValueError(f"max_active_keys must be >= 1, got {max_active_keys}")
        self.send, self.recv, self.n_workers = send, recv, n_workers
        self.first, self.mak, self.schedule = first, max_active_keys, schedule
        self.stall_timeout, self.describe = stall_timeout, describe
        self.status = status or (lambda: [None] * n_workers)
        # replicated pipelines: where new instances go (``pick_replica``)
        self.replicas = replicas
        self._load = [0] * replicas             # instances in flight per replica
        self._replica_of: dict = {}             # key -> its replica
        self._turn = 0

    def _pick_replica(self, key) -> int:
        if self.replicas == 1:
            return 0
        r = pick_replica(self._load, self._turn)
        self._turn = r + 1
        self._load[r] += 1
        self._replica_of[key] = r
        return r

    def run(self, items: Iterable[Item], on_result=None) -> RunResult:
        """Train on / evaluate ``items`` ((key, inst, train) triples, keys unique).

        ``items`` is consumed lazily: the next item is taken only when it can be admitted
        (one looked ahead), so an iterator that packs its instances on demand holds about
        ``max_active_keys`` of them at once.
        """
        pending = _Ahead(items)
        res, flight = RunResult(), {}          # flight: key -> train
        self._atoms: dict = {}                  # key -> atoms, while in flight
        owed: dict = {}                         # key -> messages still owed (result, done)
        done: set = set()
        self._awaiting = 0                      # UPDATED acknowledgements still expected
        t0 = time.perf_counter()
        while pending or flight or self._awaiting:
            while (pending and not self._awaiting and len(flight) < self.mak
                   and self.schedule.can_admit(pending[0][2], n_atoms(pending[0][1]))):
                key, inst, train = pending.popleft()
                if key in flight or key in res.loss:
                    raise ValueError(f"keys of one run must be unique: {key!r} came twice")
                self._atoms[key] = n_atoms(inst)
                self.schedule.admitted(train, self._atoms[key])
                flight[key], owed[key] = bool(train), 2 if train else 1
                res.n_in_flight_max = max(res.n_in_flight_max, len(flight))
                res.atoms_in_flight_max = max(res.atoms_in_flight_max,
                                              sum(self._atoms.values()))
                kind = Kind.FORWARD if train else Kind.EVAL
                self.send(Message(kind, key, self.first, 0, {}, (), inst,
                                  replica=self._pick_replica(key)))
            msg = self._next(flight)
            # a backend need not keep RESULT (loss worker) and DONE (first worker) in order
            if msg.kind is Kind.RESULT:
                if msg.key not in flight or msg.key in res.loss:
                    raise PipelineError(f"unexpected result for key {msg.key!r}")
                res.loss[msg.key] = float(np.asarray(msg.payload["loss"]).reshape(-1)[0])
                res.pred[msg.key] = msg.payload.get("pred")
                if msg.skip is not None:      # the forward made NaN/inf
                    res.skipped[msg.key] = msg.skip
                if on_result is not None:
                    on_result(msg.key, res.loss[msg.key], res.pred[msg.key])
            elif msg.kind is Kind.DONE:
                if not flight.get(msg.key) or msg.key in done:
                    raise PipelineError(f"unexpected completion for key {msg.key!r}")
                done.add(msg.key)
                if msg.skip is not None:       # the forward's or a gradient's NaN/inf
                    res.skipped.setdefault(msg.key, msg.skip)
            elif msg.kind is Kind.UPDATED:
                self._awaiting -= 1
                continue
            else:
                raise PipelineError(f"control node got an unexpected {msg.kind.value!r}")
            owed[msg.key] -= 1
            if owed[msg.key] == 0:
                del owed[msg.key]
                self._complete(msg.key, flight, res)
        if self.schedule.flush():
            self._update_all()
            while self._awaiting:
                self._awaiting -= self._next(flight).kind is Kind.UPDATED
        self._gather(res, t0)
        return res

    def flush(self) -> None:
        """Make every worker apply what it gathered but has not applied yet; wait for it."""
        self._awaiting = 0
        self._update_all()
        while self._awaiting:
            self._awaiting -= self._next({}).kind is Kind.UPDATED

    def _complete(self, key, flight: dict, res: RunResult) -> None:
        train = flight.pop(key)
        if self.replicas > 1:
            self._load[self._replica_of.pop(key)] -= 1
        if key in res.skipped:                 # its loss does not count (nor, if it came
            res.loss[key] = float("nan")       # before the skip was known, its gradient)
        (res.train_keys if train else res.eval_keys).append(key)
        if self.schedule.completed(train, self._atoms.pop(key, 1)):
            self._update_all()

    def _update_all(self) -> None:
        for w in range(self.n_workers):
            self.send(Message(Kind.UPDATE, worker=w))
        self._awaiting += self.n_workers

    def _gather(self, res: RunResult, t0: float) -> None:
        """Ask every worker for its counters and trace since the last run."""
        for w in range(self.n_workers):
            self.send(Message(Kind.REPORT, worker=w))
        for _ in range(self.n_workers):
            msg = self._next({})
            if msg.kind is not Kind.STATS:
                raise PipelineError(f"expected stats, got {msg.kind.value!r} from {msg.worker}")
            res.busy[msg.worker] = msg.stats["busy"]
            res.cpu[msg.worker] = msg.stats.get("cpu", 0.0)
            for name, n in msg.stats["n_updates"].items():      # replicas: summed
                res.n_updates[name] = res.n_updates.get(name, 0) + n
            for name, s in msg.stats["staleness"].items():
                res.staleness[name] = max(res.staleness.get(name, 0), s)
            if msg.stats["trace"]:
                res.reports.append((msg.worker, msg.stats["trace"]))
        res.wall = time.perf_counter() - t0
        res.busy = dict(sorted(res.busy.items()))
        res.cpu = dict(sorted(res.cpu.items()))
        res.t0 = t0

    def _next(self, flight: dict) -> Message:
        """The next message, or PipelineError when none comes within ``stall_timeout``."""
        msg = self.recv(self.stall_timeout)
        if msg is None:
            report = self._stall_report(flight)
            raise PipelineError("; ".join(line.strip() for line in report), "\n".join(report))
        if msg.kind is Kind.ERROR:
            raise self.worker_error(msg)
        return msg

    def worker_error(self, msg: Message) -> PipelineError:
        """The PipelineError of an ERROR message: worker, stage, step, key, last line."""
        tb = str(msg.error)
        last = next((line for line in reversed(tb.strip().splitlines()) if line.strip()), "")
        return PipelineError(
            f"worker {msg.worker} failed in stage {msg.stage!r} (step {msg.step}) "
            f"on key {msg.key!r} [{self._describe(msg.key)}]: {last.strip()}", tb)

    def _stall_report(self, flight: dict) -> list[str]:
        lines = [f"pipeline stalled: no message for {self.stall_timeout:g} s "
                 f"with {len(flight)} instance(s) in flight"]
        now = time.perf_counter()
        for w, cur in enumerate(self.status()):
            if cur is not None:
                stage, key, step, direction, t_start = cur
                lines.append(f"  worker {w} busy {now - t_start:.1f} s in stage {stage!r} "
                             f"({direction}, step {step}) on key {key!r} "
                             f"[{self._describe(key)}]")
        for key in list(flight)[:10]:
            lines.append(f"  in flight: key {key!r} [{self._describe(key)}]")
        return lines

    def _describe(self, key) -> str:
        if self.describe is None or key is None:
            return "no description"
        try:
            return str(self.describe(key))
        except Exception as exc:  # a failing description must not hide the real error
            return f"describe failed: {exc!r}"


class _Ahead:
    """An iterable read at most one item ahead: ``pending[0]`` peeks, ``popleft()`` takes,
    false when nothing is left (the ``deque`` calls the control node uses, without a copy).
    The next item is drawn only when asked for, after the one taken was sent."""

    _NONE, _END = object(), object()

    def __init__(self, items: Iterable):
        self._it = iter(items)
        self._head = self._NONE

    def _peek(self):
        if self._head is self._NONE:
            self._head = next(self._it, self._END)
        return self._head

    def __bool__(self) -> bool:
        return self._peek() is not self._END

    def __getitem__(self, i: int):
        head = self._peek()
        if i != 0 or head is self._END:
            raise IndexError(i)
        return head

    def popleft(self):
        head = self._peek()
        if head is self._END:
            raise IndexError("no item left")
        self._head = self._NONE
        return head
