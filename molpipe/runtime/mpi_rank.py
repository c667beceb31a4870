"""MPI worker ranks: ranks 1..K serve the worker rank 0 describes, one pipeline at a time.

``serve_unless_control()`` is what ``molpipe train --backend mpi`` calls on every rank:
rank 0 returns to train (``mpi.MPIBackend`` drives the pipelines), every other rank builds
its worker from the network config rank 0 sends, serves messages until rank 0 closes or
aborts the pipeline, and leaves when rank 0 says exit (``mpi.release``, registered at exit).
"""

from __future__ import annotations

import dataclasses
import time
import traceback

from molpipe.kernels import one_blas_thread
from molpipe.runtime import wire
from molpipe.runtime.message import CONTROL, STOP, Kind, Message, destination
from molpipe.runtime.mpi import (TAG_ABORT, TAG_MSG, Link, MPIUnavailable, at_exit, load_state,
                                 state_frame, where, world)


def serve_unless_control(replicas: bool = False) -> bool:
    """Under ``--backend mpi``: True on a worker rank once rank 0 is done (it served
    workers until then, or with ``replicas`` trained its replica: ``mpi_replicas``), False
    on rank 0 (which goes on to train)."""
    comm = world()
    if replicas:
        if comm.rank == 0:
            at_exit(comm)
            return False
        from molpipe.runtime.mpi_replicas import serve_replicas

        serve_replicas(comm)
        return True
    if comm.size < 2:
        raise MPIUnavailable("--backend mpi runs under mpiexec with 2 or more ranks, e.g. "
                             "mpiexec -n 3 molpipe train esol --backend mpi")
    if comm.rank == 0:
        at_exit(comm)
        return False
    serve(comm)
    return True


class _Leave(Exception):
    """Rank 0 said close, abort or exit."""

    def __init__(self, kind: str):
        self.kind = kind


class _Rank:
    """A worker rank: builds the worker rank 0 describes and serves it, one pipeline at a time."""

    def __init__(self, comm, max_sleep: float):
        self.comm, self.link, self.where = comm, Link(comm, max_sleep), where(comm)
        self.gen, self.worker, self.placement = None, None, {}
        self._t_off = time.time() - time.perf_counter()

    def reply(self, kind: str, arrays=None, **header) -> None:
        self.link.send(0, wire.pack({"k": kind, "g": self.gen, **header}, arrays or {}))

    def frame(self):
        """Next frame for this rank: an abort or exit on its own tag comes first."""
        while True:
            src, header, arrays = self.link.wait(None, (TAG_ABORT, TAG_MSG))
            k, gen = header["k"], header.get("g")
            if k == "exit" or (k in ("close", "abort") and gen == self.gen):
                raise _Leave(k)
            if k == "setup" or gen == self.gen:
                return header, arrays          # anything else is late, of an earlier pipeline

    def setup(self, header: dict) -> None:
        d, build = header["worker"], header["build"]
        stages, optimizers, route = wire.resolve(build["fn"])(**build.get("args", {}))
        crit = {s: wire.resolve(name)(**kw) for s, (name, kw) in d["criteria"].items()}
        from molpipe.runtime.worker import Worker

        extra = {"stash_weights": True} if d["stash"] else {}
        if d.get("predict"):
            extra["predict_weights"] = True
        if d.get("on_nonfinite") is not None:
            extra["on_nonfinite"] = d["on_nonfinite"]
        self.worker = Worker(d["wid"], {s: stages[s] for s in d["stages"]},
                             {s: optimizers[s] for s in d["stages"]}, crit, route,
                             auto_update=d["auto_update"], record=d["record"],
                             ordered=d["ordered"], **extra)
        self.placement = header["placement"]

    def send(self, msg: Message) -> None:
        d = destination(msg, self.placement)
        if msg.kind is Kind.ERROR:            # the last line names the rank
            msg = dataclasses.replace(msg, error=f"{str(msg.error).rstrip()}  [on {self.where}]")
        elif msg.kind is Kind.STATS:          # perf_counter is per host: send wall clock
            msg = dataclasses.replace(msg, stats={
                **msg.stats, "trace": [(a + self._t_off, b + self._t_off, *rest)
                                       for a, b, *rest in msg.stats["trace"]]})
        self.link.send(0 if d == CONTROL else d + 1, wire.encode(msg, self.gen))

    def recv(self) -> Message:
        """The worker's next message; admin frames (push, pull) are answered on the way."""
        while True:
            header, arrays = self.frame()
            k = header["k"]
            if wire.is_message(header):
                msg = wire.decode(header, arrays)
                return STOP if msg.kind is Kind.STOP else msg
            if k == "push":
                w = self.worker
                try:
                    load_state(w.stages, w.optimizers, header, arrays)
                except Exception:
                    self.reply("fail", where=self.where, info=traceback.format_exc())
                else:
                    self.reply("ack")
            elif k == "pull":
                header, arrays = state_frame(self.worker.stages, self.worker.optimizers)
                self.reply("state", arrays, **header)

    def pending(self) -> int:
        """1 when a frame waits for this rank, else 0 (an Iprobe: it counts no further)."""
        MPI = self.link.MPI
        return int(bool(self.comm.Iprobe(MPI.ANY_SOURCE, TAG_MSG)))

    def serve_one(self, header: dict) -> None:
        """Build the pipeline's worker and run it until rank 0 closes or aborts it."""
        self.gen = header["g"]
        try:
            self.setup(header)
        except Exception:
            self.reply("fail", where=self.where, info=traceback.format_exc())
            return self.drain()
        self.reply("ready")
        try:
            recv = lambda: self.recv()      # noqa: E731  (a function can carry .pending)
            recv.pending = self.pending
            self.worker.run(self.send, recv)
        except _Leave as leave:
            if leave.kind == "exit":
                raise
            self.reply("bye")
            return None
        except Exception:                     # outside a stage: decoding, routing, state
            self.send(Message(Kind.ERROR, worker=self.worker.wid, error=traceback.format_exc()))
        return self.drain()

    def drain(self) -> None:
        """After a failure: drop frames until rank 0 closes or aborts this pipeline."""
        try:
            while True:
                self.frame()
        except _Leave as leave:
            if leave.kind == "exit":
                raise
            self.reply("bye")


def serve(comm=None, max_sleep: float = 2e-4) -> None:
    """On every rank but 0: host the workers rank 0 sets up, until it says exit."""
    from molpipe.runtime.memory import keep_freed_memory

    keep_freed_memory()
    comm = comm or world()
    rank = _Rank(comm, max_sleep)
    with one_blas_thread():
        try:
            while True:
                header, _ = rank.frame()
                if header["k"] == "setup":
                    try:
                        rank.serve_one(header)
                    except _Leave as leave:
                        if leave.kind != "exit":
                            rank.reply("bye")
                        else:
                            raise
                elif header["k"] in ("close", "abort"):
                    rank.reply("bye")
        except _Leave:
            pass
        rank.gen = -1
        rank.reply("gone")
        rank.link.drain()
