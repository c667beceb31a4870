"""MPI backend: the control node on rank 0, worker ``w`` on rank ``w + 1`` (mpi4py point-to-point).

Launch: ``mpiexec -n K+1 molpipe train esol --backend mpi`` (K worker ranks); rank 0 runs the
training loop and ``MPIBackend`` (the seam of ``threads.py``), every other rank calls
``mpi_rank.serve()`` and hosts one worker until rank 0 says exit. This module holds rank 0's
side and what both sides share (the link, state frames); ``mpi_rank`` the worker ranks' side.
Frames (``wire.py``: one contiguous
buffer, JSON header + raw arrays, no pickle) go out with ``Isend`` — a rank never blocks in a
send, so two ranks sending to each other cannot deadlock — and come in through ``Improbe``
with a sleep backoff, so an idle rank does not spin a core.

Between runs rank 0's copy of the network is the authority: ``session()`` (around every
``run`` and ``flush``) pushes rank 0's parameters, buffers and optimizer state to the worker
ranks, and pulls them back when the run ends, so checkpoints, ``state_dict`` and learning
rate changes work exactly as with threads. Each ``Pipeline`` is a new generation: frames of
an aborted one are dropped.
"""

from __future__ import annotations

import atexit
import itertools
import socket
import sys
import time
from collections import deque
from contextlib import contextmanager

import numpy as np

from molpipe.kernels import one_blas_thread
from molpipe.runtime import wire
from molpipe.runtime.message import CONTROL, Kind, Message, destination

TAG_MSG, TAG_ABORT = 11, 12
INSTALL = "pip install 'molpipe[mpi]'  (mpi4py and the mpich wheel, which carries mpiexec)"
_GEN = itertools.count(1)


class MPIUnavailable(RuntimeError):
    """mpi4py is missing or the job was not launched under mpiexec with enough ranks."""


def world():
    """``MPI.COMM_WORLD``, or MPIUnavailable saying how to install mpi4py."""
    try:
        from mpi4py import MPI
    except ImportError as e:
        raise MPIUnavailable(f"--backend mpi needs mpi4py ({e}); install it with: {INSTALL}") from None
    return MPI.COMM_WORLD


def where(comm) -> str:
    """E.g. ``MPI rank 2 (host)``: how errors name a rank."""
    return f"MPI rank {comm.rank} ({socket.gethostname()})"


class Link:
    """One rank's end of the wire: non-blocking sends, probing receives with a sleep backoff."""

    def __init__(self, comm, max_sleep: float = 2e-4):
        from mpi4py import MPI

        self.MPI, self.comm, self.max_sleep = MPI, comm, max_sleep
        self._sends: list = []            # (request, buffer): the buffer lives until sent

    def send(self, dest: int, buf: np.ndarray, tag: int = TAG_MSG):
        """Send ``buf`` without waiting; its request (``Test()``: True once ``buf`` may change)."""
        req = self.comm.Isend([buf, self.MPI.BYTE], dest, tag)
        self._sends.append((req, buf))
        if len(self._sends) > 32:
            self._reap()
        return req

    def _reap(self) -> None:
        self._sends = [(r, b) for r, b in self._sends if not r.Test()]

    def poll(self, tag: int = TAG_MSG, source: int | None = None):
        """The next frame ``(source, header, arrays)`` if one is waiting, else None."""
        got = self.post(tag, source)
        if got is None:
            return None
        req, src, buf = got
        req.Wait()
        return (src, *wire.unpack(buf))

    def post(self, tag: int = TAG_MSG, source: int | None = None):
        """Start receiving the next frame of ``tag`` if one has been announced: ``(request,
        source, buffer)``, the buffer whole once ``request.Test()`` says so; else None. A
        large frame's bytes move only while its sender is inside MPI too: ``poll`` waits
        for that, ``post`` returns at once."""
        MPI = self.MPI
        status = MPI.Status()
        m = self.comm.improbe(MPI.ANY_SOURCE if source is None else source, tag, status)
        if m is None:
            return None
        buf = np.empty(status.Get_count(MPI.BYTE), dtype=np.uint8)
        return m.Irecv([buf, MPI.BYTE]), status.Get_source(), buf

    def wait(self, timeout: float | None, tags=(TAG_MSG,)):
        """The next frame on any of ``tags`` (earlier tags first), or None after ``timeout``."""
        deadline = None if timeout is None else time.monotonic() + timeout
        sleep, spins = 0.0, 0
        while True:
            for tag in tags:
                got = self.poll(tag)
                if got is not None:
                    return got
            if self._sends:
                self._reap()
            if deadline is not None and time.monotonic() >= deadline:
                return None
            spins += 1
            if spins > 20:                          # spin briefly, then back off to max_sleep
                sleep = min(max(2 * sleep, 1e-5), self.max_sleep)
                time.sleep(sleep)

    def drain(self, timeout: float = 5.0) -> bool:
        """Wait until every send has left; False if some did not within ``timeout``."""
        deadline = time.monotonic() + timeout
        while self._sends and time.monotonic() < deadline:
            self._reap()
            time.sleep(1e-4)
        return not self._sends


# -- state: parameters, buffers and optimizer slots of some stages --------------------------
def state_frame(stages: dict, optimizers: dict) -> tuple[dict, dict]:
    """(optimizer scalars, arrays named ``stage/p|b|o/name``) of ``stages``."""
    arrays, scalars = {}, {}
    for s, st in stages.items():
        arrays.update({f"{s}/p/{k}": a for k, a in st.params.items()})
        arrays.update({f"{s}/b/{k}": a for k, a in getattr(st, "buffers", {}).items()})
        opt = optimizers.get(s)
        if hasattr(opt, "state_dict"):
            for k, v in opt.state_dict().items():
                if isinstance(v, np.ndarray):
                    arrays[f"{s}/o/{k}"] = v
                else:
                    scalars.setdefault(s, {})[k] = wire._jsonable(v)
    return {"opt": scalars}, arrays


def load_state(stages: dict, optimizers: dict, header: dict, arrays: dict) -> None:
    """Copy a ``state_frame`` into ``stages`` and ``optimizers`` in place."""
    slots: dict = {}
    for name, a in arrays.items():
        s, kind, k = name.split("/", 2)
        if kind == "o":
            slots.setdefault(s, {})[k] = a
        else:
            (stages[s].params if kind == "p" else stages[s].buffers)[k][...] = a
    for s, sc in header["opt"].items():
        optimizers[s].load_state_dict({**sc, **slots.get(s, {})})


def describe_worker(w) -> dict:
    """What a worker rank needs to rebuild worker ``w`` around its own stages."""
    crit = {}
    for name, acc in w.acc.items():
        c = acc.criterion
        fields = getattr(c, "__dataclass_fields__", None)
        if fields is None and vars(c):
            raise TypeError(f"criterion {c!r} of stage {name!r} cannot travel to an MPI rank")
        crit[name] = [wire.type_name(c), {f: getattr(c, f) for f in fields or ()}]
    return {"wid": w.wid, "stages": list(w.stages), "criteria": crit, "auto_update": w.auto_update,
            "record": w.record, "ordered": w.ordered,
            "stash": bool(getattr(w, "stash_weights", getattr(w, "stash", None) is not None)),
            "predict": bool(getattr(w, "predict_weights", False)),
            "on_nonfinite": getattr(w, "on_nonfinite", None)}


def balanced_placement(stages: list[str], n_workers: int, weights: dict | None = None) -> dict:
    """Cut the stage list into ``n_workers`` contiguous groups with the smallest heaviest group."""
    n = len(stages)
    if not 1 <= n_workers <= n:
        raise ValueError(f"{n} stages can be placed on 1 to {n} workers, not {n_workers}")
    w = [float((weights or {}).get(s, 1.0)) for s in stages]
    pre = np.concatenate([[0.0], np.cumsum(w)])
    INF = float("inf")
    best = [[INF] * (n + 1) for _ in range(n_workers + 1)]   # best[k][i]: first i on k workers
    cut = [[0] * (n + 1) for _ in range(n_workers + 1)]
    best[0][0] = 0.0
    for k in range(1, n_workers + 1):
        for i in range(k, n + 1):
            for j in range(k - 1, i):
                cost = max(best[k - 1][j], pre[i] - pre[j])
                if cost < best[k][i] - 1e-12:
                    best[k][i], cut[k][i] = cost, j
    placement, i = {}, n
    for k in range(n_workers, 0, -1):
        j = cut[k][i]
        placement.update({s: k - 1 for s in stages[j:i]})
        i = j
    return {s: placement[s] for s in stages}


# -- rank 0 ---------------------------------------------------------------------------------
class MPIBackend:
    """The backend seam of ``threads.py`` on rank 0; worker ``w`` runs on rank ``w + 1``.

    ``build`` is ``{"fn": "module:function", "args": {...}}``: every worker rank calls
    ``fn(**args) -> (stages, optimizers, route)`` to build the same network from the same
    config and seed, then keeps only its own worker's stages.
    """

    def __init__(self, workers: list, placement: dict[str, int], *, build: dict | None = None,
                 comm=None, max_sleep: float = 2e-4, setup_timeout: float = 300.0):
        self.comm = comm or world()
        if self.comm.rank != 0:
            raise RuntimeError("MPIBackend runs on rank 0; the other ranks call "
                               "molpipe.runtime.mpi_rank.serve()")
        need = len(workers) + 1
        if self.comm.size != need:
            raise MPIUnavailable(f"{len(workers)} workers need {need} MPI ranks (rank 0 = control "
                                 f"node, one rank per worker); this job has {self.comm.size}: "
                                 f"launch with mpiexec -n {need}")
        if build is None:
            raise ValueError("the MPI backend needs build={'fn': 'module:function', 'args': {...}} "
                             "to rebuild the stages on the worker ranks")
        self.workers, self.placement, self.build = workers, placement, build
        self.link = Link(self.comm, max_sleep)
        self.setup_timeout, self.gen = setup_timeout, next(_GEN)
        self._inbox: deque = deque()          # messages for the control node
        self._replies: dict[int, deque] = {}  # rank -> admin replies (header, arrays)
        self.threads: list[int] = []          # worker ranks started and not yet stopped
        self._t_off = time.time() - time.perf_counter()
        at_exit(self.comm)

    def _rank(self, wid: int) -> int:
        return wid + 1

    def send(self, msg: Message) -> None:
        d = destination(msg, self.placement)
        if d == CONTROL:
            self._inbox.append(msg)
        else:
            self.link.send(self._rank(d), wire.encode(msg, gen=self.gen))

    def _admin(self, rank: int, kind: str, arrays=None, tag: int = TAG_MSG, **header) -> None:
        self.link.send(rank, wire.pack({"k": kind, "g": self.gen, **header}, arrays or {}), tag)

    def _pump(self, timeout: float | None) -> bool:
        """Receive one frame into the inbox or the replies; False on timeout."""
        got = self.link.wait(timeout)
        if got is None:
            return False
        src, header, arrays = got
        if header.get("g") != self.gen:
            return True                       # a late frame of an earlier pipeline
        if wire.is_message(header):
            msg = wire.decode(header, arrays)
            if msg.kind is Kind.STATS:        # worker times are wall clock: back to perf_counter
                tr = [(a - self._t_off, b - self._t_off, wire._tuplify(k), *rest)
                      for a, b, k, *rest in msg.stats["trace"]]
                msg = Message(Kind.STATS, worker=msg.worker, stats={**msg.stats, "trace": tr})
            self._inbox.append(msg)
        else:
            self._replies.setdefault(src, deque()).append((header, arrays))
        return True

    def recv(self, timeout: float | None = None) -> Message | None:
        deadline = None if timeout is None else time.monotonic() + timeout
        while not self._inbox:
            left = None if deadline is None else max(0.0, deadline - time.monotonic())
            if not self._pump(left) and not self._inbox:
                return None
        return self._inbox.popleft()

    def _await(self, ranks, kinds: tuple, timeout: float, strict: bool = True) -> dict[int, tuple]:
        """The next admin reply of every rank in ``ranks`` (those that answered in time);
        ``strict``: a failure reported meanwhile raises PipelineError."""
        from molpipe.runtime.control import PipelineError

        deadline, got = time.monotonic() + timeout, {}
        while len(got) < len(ranks):
            for r in ranks:
                q = self._replies.get(r)
                if r not in got and q:
                    header, arrays = q.popleft()
                    if header["k"] == "fail" and strict:
                        raise PipelineError(f"worker {r - 1} on {header['where']} failed:\n{header['info']}")
                    if header["k"] in kinds:
                        got[r] = (header, arrays)
            errors = [m for m in self._inbox if m.kind is Kind.ERROR] if strict else []
            if errors:
                m = errors[0]
                raise PipelineError(f"worker {m.worker} failed in stage {m.stage!r} on key {m.key!r}:\n{m.error}")
            if len(got) < len(ranks) and not self._pump(max(0.0, deadline - time.monotonic())):
                break
        return got

    def start(self) -> None:
        from molpipe.runtime.control import PipelineError

        if self.threads:
            raise RuntimeError("backend already started")
        ranks = [self._rank(w.wid) for w in self.workers]
        for w in self.workers:
            self._admin(self._rank(w.wid), "setup", worker=describe_worker(w), build=self.build,
                        placement=self.placement)
        self.threads = ranks
        got = self._await(ranks, ("ready",), self.setup_timeout)
        if len(got) < len(ranks):
            raise PipelineError(f"MPI ranks {sorted(set(ranks) - set(got))} did not build their "
                                f"workers within {self.setup_timeout:g} s")

    def stop(self, timeout: float = 5.0) -> list[int]:
        for r in self.threads:
            self._admin(r, "close")
        return self._bye(timeout)

    def abort(self, timeout: float = 5.0) -> list[int]:
        """Every worker rank drops its backlog and leaves; a rank that does not answer within
        ``timeout`` is stuck in a stage: the pending error is printed and the job aborted."""
        for r in self.threads:
            self._admin(r, "abort", tag=TAG_ABORT)
        stuck = self._bye(timeout)
        if stuck:
            err = sys.exc_info()[1]
            print(f"molpipe: {err}\nmolpipe: MPI ranks {[w + 1 for w in stuck]} did not stop within "
                  f"{timeout:g} s; aborting the MPI job", file=sys.stderr, flush=True)
            self.comm.Abort(1)
        return stuck

    def _bye(self, timeout: float) -> list[int]:
        ranks = list(self.threads)
        got = self._await(ranks, ("bye",), timeout, strict=False)
        self._inbox.clear()
        self.threads = [r for r in ranks if r not in got]
        return [r - 1 for r in self.threads]

    def alive(self) -> list[int]:
        return [r - 1 for r in self.threads]

    def status(self) -> list[tuple | None]:
        return [None] * len(self.workers)

    def _sync(self, kind: str) -> None:
        from molpipe.runtime.control import PipelineError

        ranks = [self._rank(w.wid) for w in self.workers]
        for w in self.workers:
            if kind == "push":
                header, arrays = state_frame(w.stages, w.optimizers)
                self._admin(self._rank(w.wid), "push", arrays, **header)
            else:
                self._admin(self._rank(w.wid), "pull")
        got = self._await(ranks, ("ack", "state"), self.setup_timeout)
        if len(got) < len(ranks):
            raise PipelineError(f"MPI ranks {sorted(set(ranks) - set(got))} did not answer {kind}")
        if kind == "pull":
            for w in self.workers:
                load_state(w.stages, w.optimizers, *got[self._rank(w.wid)])

    @contextmanager
    def session(self):
        """Push rank 0's state to the workers, run, pull their state back (one BLAS thread)."""
        with one_blas_thread():
            self._sync("push")
            yield
            self._sync("pull")

    def __enter__(self) -> "MPIBackend":
        self.start()
        return self

    def __exit__(self, *exc) -> None:
        self.stop()


_EXIT_REGISTERED = False


def at_exit(comm) -> None:
    """On rank 0: when the process ends, tell every worker rank to exit (once)."""
    global _EXIT_REGISTERED
    if not _EXIT_REGISTERED and comm.rank == 0 and comm.size > 1:
        _EXIT_REGISTERED = True
        atexit.register(release, comm)


def release(comm, timeout: float = 10.0) -> None:
    """Rank 0: every worker rank leaves ``serve``; abort the job if one does not answer."""
    link = Link(comm)
    for r in range(1, comm.size):
        link.send(r, wire.pack({"k": "exit", "g": -1}, {}), TAG_ABORT)
    left, deadline = set(range(1, comm.size)), time.monotonic() + timeout
    while left and time.monotonic() < deadline:
        got = link.wait(max(0.0, deadline - time.monotonic()))
        if got is not None and got[1]["k"] == "gone":
            left.discard(got[0])
    if left or not link.drain(timeout):
        print(f"molpipe: MPI ranks {sorted(left)} did not exit; aborting the job",
              file=sys.stderr, flush=True)
        comm.Abort(1)
