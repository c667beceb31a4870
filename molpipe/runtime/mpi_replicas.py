"""Data-parallel replicas over MPI: every rank trains a whole pipeline on its share of the data.

Launch: ``mpiexec -n R molpipe train DATA --backend mpi --layout replicas``. Rank r runs one
replica: a thread-backend ``Pipeline`` with every stage on one worker (the ``fused`` layout)
and its own control node, on its own core. ``DataParallel`` (rank 0) cuts each run's
training instances into R shares of about equal atoms (in their order) and sends rank r the
*specs* of its share (e.g. store rows: small integer arrays, never instance payloads), with
rank 0's parameters, buffers and optimizer state; every rank rebuilds its instances itself
(``load(spec)``, e.g. ``GraphStore.pack(rows)`` on the store it opened). During the run the
replicas exchange parameter deltas stage by stage (``deltas.py``); at its end each rank
sends its losses to rank 0, which then holds the authoritative parameters (for evaluation,
checkpoints, ``state_dict``) until the next run pushes them out again. Evaluation runs on
rank 0 alone.

``build`` is ``{"fn": "module:function", "args": {...}}``; every rank ``1..R-1`` calls
``fn(**args)`` and gets ``{"stages", "optimizers", "route", "first", "load"}``.

A failing replica sends rank 0 its error; rank 0 aborts the others and raises PipelineError
naming the rank. A rank that does not answer within the stall timeout is named too, and the
job is aborted rather than left hanging.
"""

from __future__ import annotations

import itertools
import time
import traceback

import numpy as np

from molpipe.runtime import wire
from molpipe.runtime.control import PipelineError, RunResult
from molpipe.runtime.deltas import TAG_CTRL, DeltaExchange, DeltaOptimizer, ReplicaStop
from molpipe.runtime.mpi import (TAG_ABORT, TAG_MSG, Link, at_exit, load_state, state_frame,
                                 where, world)
from molpipe.runtime.pipeline import Pipeline

_GEN = itertools.count(1)


def shard(weights: list[float], n: int) -> list[list[int]]:
    """Item indices of each of ``n`` shares: in order, each item to the share with the least
    weight so far (ties: the lowest share), so the shares end about together."""
    load, out = [0.0] * n, [[] for _ in range(n)]
    for i, w in enumerate(weights):
        r = min(range(n), key=load.__getitem__)
        out[r].append(i)
        load[r] += float(w)
    return out


def _wrap(stages: dict, optimizers: dict, exchange: DeltaExchange, power: int = 1) -> dict:
    return {s: DeltaOptimizer(o, s, exchange, power) if stages[s].params else o
            for s, o in optimizers.items()}


def _pipeline(stages, optimizers, route, first, options: dict) -> Pipeline:
    return Pipeline(stages, optimizers, route, first, placement={s: 0 for s in stages},
                    backend="thread", **options)


def _specs(keys: list, specs: list) -> tuple[dict, dict]:
    lens = [len(s) for s in specs]
    arrays = {"spec": np.concatenate(specs).astype(np.int64) if specs else np.zeros(0, np.int64),
              "spec_offsets": np.concatenate([[0], np.cumsum(lens)]).astype(np.int64)}
    return {"keys": wire._jsonable(keys)}, arrays


class DataParallel:
    """Rank 0 of R data-parallel replicas (``mpiexec -n R``); R = 1 trains alone.

    ``options``: ``Pipeline`` keywords of every replica (max_active_keys, criterion, ...:
    JSON values, they travel to the other ranks); ``every``: a stage sends its change every
    ``every`` of its steps; ``spec_of(inst)``: the int array another rank rebuilds ``inst``
    from; ``weight(inst)``: its cost when the shares are cut; ``momentum_scaling``: every
    replica's momentum (Adam's beta1) steps as beta1 ** R (``deltas.DeltaOptimizer``).
    """

    def __init__(self, stages: dict, optimizers: dict, route, first: str, *, build: dict,
                 options: dict | None = None, every: int = 1, spec_of=None, weight=None,
                 comm=None, setup_timeout: float = 300.0, record: bool = False, describe=None,
                 momentum_scaling: bool = False):
        self.comm = comm or world()
        if self.comm.rank != 0:
            raise RuntimeError("DataParallel runs on rank 0; the other ranks call serve_replicas()")
        self.R, self.build, self.every = self.comm.size, build, every
        self.options = dict(options or {})
        self.stall = float(self.options.get("stall_timeout", 300.0))
        self.spec_of = spec_of or (lambda inst: np.asarray(inst.rows))
        self.weight = weight or (lambda inst: 1.0)
        self.stages, self.optimizers, self.setup_timeout = stages, optimizers, setup_timeout
        self.link, self.gen, self.run_id = Link(self.comm), next(_GEN), 0
        self.peers = list(range(1, self.R))
        self._inbox: list = []              # control frames from the peers: (src, header, arrays)
        self.failure: str | None = None
        self.exchange = DeltaExchange(self.link, self.peers, stages, every, self._on_ctrl, record)
        self.power = self.R if momentum_scaling else 1
        self.pipeline = _pipeline(stages, _wrap(stages, optimizers, self.exchange, self.power),
                                  route, first,
                                  {**self.options, "describe": describe})
        self.workers = self.pipeline.workers
        self.started = False
        at_exit(self.comm)

    # -- control frames --------------------------------------------------------------------
    def _send(self, rank: int, kind: str, arrays=None, **header) -> None:
        self.link.send(rank, wire.pack({"k": kind, "g": self.gen, **header}, arrays or {}), TAG_CTRL)

    def _on_ctrl(self, src: int, header: dict, arrays: dict) -> None:
        if header.get("g") != self.gen:
            return
        if header["k"] == "fail":
            self.failure = f"replica on {header['where']} failed:\n{header['info']}"
            raise ReplicaStop(self.failure)
        self._inbox.append((src, header, arrays))

    def _await(self, kind: str, timeout: float) -> dict[int, tuple]:
        """Every peer's next ``kind`` frame; PipelineError on a failure or after ``timeout``."""
        got, deadline = {}, time.monotonic() + timeout
        while len(got) < len(self.peers):
            for item in list(self._inbox):
                src, header, arrays = item
                if header["k"] == kind and src not in got:
                    self._inbox.remove(item)
                    got[src] = (header, arrays)
            if len(got) == len(self.peers):
                break
            frame = self.link.wait(max(0.0, deadline - time.monotonic()), (TAG_CTRL,))
            if frame is None:
                late = [p for p in self.peers if p not in got]
                raise PipelineError(f"MPI ranks {late} did not answer {kind!r} within {timeout:g} s")
            try:
                self._on_ctrl(*frame)
            except ReplicaStop:
                raise PipelineError(self.failure) from None
        return got

    # -- lifecycle ---------------------------------------------------------------------------
    def start(self) -> "DataParallel":
        if self.started:
            return self
        self.pipeline.start()
        for r in self.peers:
            self._send(r, "setup", build=self.build, options=self.options, every=self.every,
                       power=self.power, record=self.exchange.record)
        self.started = True
        self._await("ready", self.setup_timeout)
        return self

    def close(self, timeout: float = 10.0) -> None:
        if not self.started:
            return
        self.started = False
        for r in self.peers:
            self._send(r, "close")
        try:
            self._await("bye", timeout)
        except PipelineError:
            pass
        self.pipeline.close()

    def utilization(self) -> dict[int, float]:
        """Rank 0's replica: busy share of its worker's wall time in the last run."""
        return self.pipeline.utilization()

    def cpu_utilization(self) -> dict[int, float]:
        return self.pipeline.cpu_utilization()

    def __enter__(self) -> "DataParallel":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- runs --------------------------------------------------------------------------------
    def run(self, items, on_result=None) -> RunResult:
        """Train on ``(key, inst, True)`` items across the replicas, or evaluate ``(key, inst,
        False)`` items on rank 0 alone; one call per epoch."""
        items = list(items)
        self.start()
        if not items or not all(train for _, _, train in items):
            if any(train for _, _, train in items):
                raise ValueError("a data-parallel run either trains or evaluates, not both")
            return self.pipeline.run(items, on_result)
        return self.train_shards([k for k, _, _ in items],
                                 [self.spec_of(inst) for _, inst, _ in items],
                                 [self.weight(inst) for _, inst, _ in items],
                                 lambda mine: ((k, inst, True) for k, inst, _ in
                                               (items[i] for i in mine)), on_result)

    def train_shards(self, keys: list, specs: list, weights, local, on_result=None) -> RunResult:
        """Train on instances known by their ``keys``, ``specs`` (what a rank rebuilds each
        from) and ``weights`` (their cost) before any is built: each rank gets the specs of
        its share; ``local(indices)`` gives rank 0's own as ``(key, inst, True)``, built as
        its control node draws them."""
        self.start()
        t0 = time.perf_counter()
        shares = shard(list(weights), self.R)
        self.run_id += 1
        header, arrays = state_frame(self.stages, self.optimizers)
        for r in self.peers:
            h, a = _specs([keys[i] for i in shares[r]], [specs[i] for i in shares[r]])
            self._send(r, "run", {**arrays, **a}, e=self.run_id, **header, **h)
        self.exchange.begin(self.gen, self.run_id)
        try:
            res = self.pipeline.run(local(shares[0]), on_result)
            self.pipeline.flush()
            self.exchange.finish(self.stall)
            results = self._await("result", self.stall)
        except BaseException as err:
            self._abort()
            if self.failure is not None:
                raise PipelineError(self.failure) from None
            if isinstance(err, TimeoutError):
                raise PipelineError(str(err)) from None
            raise
        for _, (h, a) in sorted(results.items()):
            res.loss.update({wire._tuplify(k): v for k, v in h["loss"]})
            res.train_keys.extend(wire._tuplify(k) for k in h["train_keys"])
            res.skipped.update({wire._tuplify(k): v for k, v in h["skipped"]})
            res.n_in_flight_max = max(res.n_in_flight_max, h["n_in_flight_max"])
        res.wall = time.perf_counter() - t0
        self.replica_stats = {0: dict(self.exchange.stats), **{r: h["stats"] for r, (h, _)
                                                               in results.items()}}
        return res

    def _abort(self, timeout: float = 10.0) -> None:
        """Every peer leaves the run; one that does not answer in time aborts the job."""
        for r in self.peers:
            self._send(r, "abort", e=self.run_id)
        try:
            self._await("aborted", timeout)
            self.exchange.discard()
        except PipelineError as err:
            if self.failure is None or "did not answer" in str(err):
                import sys

                print(f"molpipe: {self.failure or err}\nmolpipe: {err}; aborting the MPI job",
                      file=sys.stderr, flush=True)
                self.comm.Abort(1)

    def pull(self) -> dict[int, tuple[dict, dict]]:
        """Every peer's ``state_frame`` (tests: the replicas agree after a run)."""
        for r in self.peers:
            self._send(r, "pull")
        return self._await("state", self.setup_timeout)

    def flush(self) -> None:
        """Gradients left in rank 0's accumulators are applied at the end of every run."""


# -- ranks 1..R-1 ------------------------------------------------------------------------------
class _Replica:
    """A rank hosting one replica, built from rank 0's ``setup``."""

    def __init__(self, comm):
        self.comm, self.link, self.where = comm, Link(comm), where(comm)
        self.gen, self.run_id, self.net, self.exchange = None, 0, None, None

    def reply(self, kind: str, arrays=None, **header) -> None:
        self.link.send(0, wire.pack({"k": kind, "g": self.gen, **header}, arrays or {}), TAG_CTRL)

    def on_ctrl(self, src: int, header: dict, arrays: dict) -> None:
        if header["k"] == "exit":
            raise ReplicaStop("exit")
        if header.get("g") == self.gen and header["k"] == "abort" and header.get("e") == self.run_id:
            raise ReplicaStop("rank 0 aborted the run")

    def setup(self, header: dict) -> None:
        self.gen = header["g"]
        b = header["build"]
        self.net = wire.resolve(b["fn"])(**b.get("args", {}))
        self.options, self.every = header["options"], header["every"]
        peers = [r for r in range(self.comm.size) if r != self.comm.rank]
        self.exchange = DeltaExchange(self.link, peers, self.net["stages"], self.every,
                                      self.on_ctrl, record=header.get("record", False))
        self.opts = _wrap(self.net["stages"], self.net["optimizers"], self.exchange,
                          header.get("power", 1))

    def run(self, header: dict, arrays: dict) -> None:
        net = self.net
        self.run_id = header["e"]
        specs, offs = arrays.pop("spec"), arrays.pop("spec_offsets")
        load_state(net["stages"], net["optimizers"], header, arrays)
        items = [(wire._tuplify(k), net["load"](specs[offs[i]:offs[i + 1]]), True)
                 for i, k in enumerate(header["keys"])]
        self.exchange.begin(self.gen, self.run_id)
        p = _pipeline(net["stages"], self.opts, net["route"], net["first"], self.options)
        try:
            with p:
                res = p.run(items)
                p.flush()
            self.exchange.finish(float(self.options.get("stall_timeout", 300.0)))
        except ReplicaStop as stop:
            return self._stopped(stop)
        except PipelineError as err:
            if isinstance(err.__cause__, ReplicaStop) or "ReplicaStop" in str(err):
                return self._stopped(ReplicaStop(str(err)))
            return self.reply("fail", where=self.where, info=str(err))
        except Exception:
            return self.reply("fail", where=self.where, info=traceback.format_exc())
        self.reply("result", loss=wire._jsonable(list(res.loss.items())),
                   train_keys=wire._jsonable(res.train_keys),
                   skipped=wire._jsonable(list(res.skipped.items())),
                   n_in_flight_max=res.n_in_flight_max, stats=self.exchange.stats)

    def _stopped(self, stop: ReplicaStop) -> None:
        if "exit" == str(stop):
            raise stop
        self.exchange.discard()
        self.reply("aborted")

    def pull(self) -> None:
        h, a = state_frame(self.net["stages"], self.net["optimizers"])
        a.update({f"sent/{s}/{k}": v for s, d in self.exchange.sent_sum.items() for k, v in d.items()})
        self.reply("state", a, **h)


def serve_replicas(comm=None) -> None:
    """On every rank but 0: host the replica rank 0 sets up, until it says exit."""
    from molpipe.kernels import one_blas_thread
    from molpipe.runtime.memory import keep_freed_memory

    keep_freed_memory()
    comm = comm or world()
    rank = _Replica(comm)
    with one_blas_thread():
        while True:
            _, header, arrays = rank.link.wait(None, (TAG_ABORT, TAG_CTRL))
            k = header["k"]
            if k == "exit":
                break
            try:
                if k == "setup":
                    try:
                        rank.setup(header)
                    except Exception:
                        rank.gen = header["g"]
                        rank.reply("fail", where=rank.where, info=traceback.format_exc())
                        continue
                    rank.reply("ready")
                elif header.get("g") != rank.gen:
                    continue                       # late, of an earlier group
                elif k == "run":
                    rank.run(header, arrays)
                elif k == "pull":
                    rank.pull()
                elif k == "abort":
                    rank.exchange.discard()
                    rank.reply("aborted")
                elif k == "close":
                    rank.reply("bye")
            except ReplicaStop:
                break                              # exit arrived mid-run
    if rank.exchange is not None:
        rank.exchange.discard()
    rank.gen = -1
    rank.link.send(0, wire.pack({"k": "gone", "g": -1}, {}), TAG_MSG)
    rank.link.drain()
