"""Pipeline: stages + optimizers + route -> workers on a backend, driven by a control node."""

from __future__ import annotations

from pathlib import Path
from typing import Any, Callable, Iterable

from molpipe.runtime.accumulator import Criterion, EveryN, parse_criterion
from molpipe.runtime.control import ControlNode, PipelineError, RunResult
from molpipe.runtime.replicas import SharedOptimizer, replicated_placement
from molpipe.runtime.schedule import make_schedule, parse_admission
from molpipe.runtime.defaults import MAX_ACTIVE_KEYS, MIN_UPDATE_FREQUENCY, STALL_TIMEOUT
from molpipe.runtime.threads import ThreadBackend
from molpipe.runtime.trace import utilization, write_trace
from molpipe.runtime.worker import Route, Worker

BACKENDS = {"thread": ThreadBackend, "mpi": None}   # mpi: imported on use (mpi4py is optional)


def make_backend(name: str, workers: list, placement: dict, **options):
    """The backend called ``name`` around ``workers`` (``options``: backend-specific)."""
    if name == "mpi":
        from molpipe.runtime.mpi import MPIBackend

        return MPIBackend(workers, placement, **options)
    return BACKENDS[name](workers, placement, **options)


class Pipeline:
    """Asynchronous model-parallel training of ``stages`` (AMPNet style).

    Parameters
    ----------
    stages : dict[str, Stage]          the network, cut into stages (one is the loss stage)
    optimizers : dict[str, optimizer]  per stage; ``opt.step(grads, scale)`` updates in place
    route : (stage, step, inst) -> (stage, step) | None
                                        control flow of an instance; None after the loss
    first : str                         the stage every instance starts at (step 0)
    max_active_keys : int               most instances in flight at once
    min_update_frequency : int          gradients a stage gathers before it updates
    criterion : Criterion | dict[str, Criterion] | str | None
                                        update rule replacing ``EveryN(min_update_frequency)``
                                        (a text form: ``accumulator.parse_criterion``)
    admission : "instances" | "atoms:N"
                                        async: also keep the atoms in flight within N
    schedule : "async" | "sync"         own updates per worker, or group-wise updates of all
    sync_group : int | None             sync: instances per update (default max_active_keys)
    placement : dict[str, int] | None   stage -> worker id (0..n-1); default one per stage
    backend : "thread" | "mpi"          what runs the workers (mpi: run under mpiexec, rank 0)
    backend_options : dict | None       keywords of the backend (mpi: ``build``, see mpi.py)
    trace : bool                        record every busy interval of every worker
    stall_timeout : float               seconds without any message before giving up
    describe : (key) -> str             description of an instance for error messages
    weight_stashing : bool              backward with the weights the forward used (PipeDream)
    weight_prediction : bool            forward on weights extrapolated over the updates
                                        expected before the backward (SpecTrain); with
                                        stashing the backward uses the same ones
    on_nonfinite : None | "stop" | "skip"
                                        NaN/inf in a training forward: unchecked, stop the
                                        run (PipelineError), or skip the instance
    replicas : int                      copies of the placement's workers sharing one set of
                                        parameters (async, thread backend; replicas.py)
    """

    def __init__(self, stages: dict, optimizers: dict, route: Route, first: str, *,
                 max_active_keys: int = MAX_ACTIVE_KEYS,
                 min_update_frequency: int = MIN_UPDATE_FREQUENCY,
                 criterion: Criterion | dict | None = None, schedule: str = "async",
                 placement: dict[str, int] | None = None, backend: str = "thread",
                 trace: bool = False, stall_timeout: float = STALL_TIMEOUT,
                 describe: Callable[[Any], str] | None = None, weight_stashing: bool = False,
                 on_nonfinite: str | None = None, backend_options: dict | None = None,
                 sync_group: int | None = None, admission: str = "instances",
                 weight_prediction: bool = False, replicas: int = 1):
        if first not in stages:
            raise ValueError(f"first stage {first!r} is not among the stages")
        if set(optimizers) != set(stages):
            raise ValueError("every stage needs exactly one optimizer")
        placement = dict(placement) if placement else {s: i for i, s in enumerate(stages)}
        if set(placement) != set(stages):
            raise ValueError("placement must give a worker to every stage, and only to them")
        n_workers = max(placement.values()) + 1
        if sorted(set(placement.values())) != list(range(n_workers)):
            raise ValueError("worker ids in placement must be 0..n-1 with none unused")
        if backend not in BACKENDS:
            raise ValueError(f"unknown backend {backend!r} (have {sorted(BACKENDS)})")
        if replicas < 1:
            raise ValueError(f"replicas must be >= 1, got {replicas}")
        if replicas > 1 and (schedule != "async" or backend != "thread"):
            raise ValueError("replicas need the async schedule on the thread backend "
                             f"(got schedule {schedule!r}, backend {backend!r})")
        self.schedule = make_schedule(schedule, max_active_keys, sync_group,
                                      parse_admission(admission))
        crit = self._criteria(stages, criterion, min_update_frequency)
        self.stages, self.placement, self.replicas = stages, placement, replicas
        if replicas > 1:
            optimizers = {s: SharedOptimizer(o, stages[s].params) for s, o in optimizers.items()}
        self.workers = []
        for r in range(replicas):
            own = stages if r == 0 else {s: st.replica() for s, st in stages.items()}
            self.workers += [
                Worker(w + r * n_workers, {s: own[s] for s in stages if placement[s] == w},
                       {s: optimizers[s] for s in stages if placement[s] == w},
                       crit, route, auto_update=self.schedule.auto_update, record=trace,
                       ordered=not self.schedule.auto_update, stash_weights=weight_stashing,
                       on_nonfinite=on_nonfinite, predict_weights=weight_prediction,
                       replica=r)
                for w in range(n_workers)]
        self.backend = make_backend(backend, self.workers,
                                    replicated_placement(placement, replicas),
                                    **(backend_options or {}))
        self.control = ControlNode(self.backend.send, self.backend.recv, len(self.workers),
                                   first=first, max_active_keys=max_active_keys,
                                   schedule=self.schedule, stall_timeout=stall_timeout,
                                   describe=describe, status=self.backend.status,
                                   replicas=replicas)
        self.last: RunResult | None = None
        self.n_in_flight_max = 0
        self._state = "new"   # new -> running -> closed | failed

    @staticmethod
    def _criteria(stages, criterion, muf) -> dict[str, Criterion]:
        if isinstance(criterion, str):
            criterion = parse_criterion(criterion, muf)
        if isinstance(criterion, dict):
            return {s: criterion.get(s, EveryN(muf)) for s in stages}
        return {s: criterion or EveryN(muf) for s in stages}

    # -- lifecycle ---------------------------------------------------------------------
    def start(self) -> "Pipeline":
        if self._state != "new":
            raise RuntimeError(f"cannot start a {self._state} pipeline")
        self.backend.start()
        self._state = "running"
        return self

    def close(self, timeout: float = 5.0) -> list[int]:
        """Stop and join every worker; return the ids of workers still alive (stuck)."""
        if self._state == "running":
            self._state = "closed"
            return self.backend.stop(timeout)
        return self.backend.alive() if self.backend.threads else []

    def __enter__(self) -> "Pipeline":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.close()

    # -- running -----------------------------------------------------------------------
    def run(self, items: Iterable[tuple[Any, Any, bool]],
            on_result: Callable[[Any, float, Any], None] | None = None) -> RunResult:
        """Train on / evaluate ``(key, inst, train)`` items; one call per epoch.

        Raises PipelineError (after stopping every worker) when a stage fails or nothing
        happens for ``stall_timeout`` seconds.
        """
        if self._state == "new":
            self.start()
        if self._state != "running":
            raise RuntimeError(f"cannot run a {self._state} pipeline")
        try:
            with self.backend.session():
                res = self.control.run(items, on_result)
        except BaseException:
            self._state = "failed"
            stuck = self.backend.abort()
            for w in self.workers:
                if w.wid not in stuck:
                    for stage in w.stages.values():
                        stage.clear_cache()
            raise
        self.last = res
        self.n_in_flight_max = max(self.n_in_flight_max, res.n_in_flight_max)
        return res

    def flush(self) -> None:
        """Apply every stage's gathered-but-unapplied gradients now (e.g. before a checkpoint).

        Without it they carry over into the next ``run``: an accumulator persists between runs.
        """
        if self._state != "running":
            raise RuntimeError(f"cannot flush a {self._state} pipeline")
        try:
            with self.backend.session():
                self.control.flush()
        except BaseException:
            self._state = "failed"
            self.backend.abort()
            raise

    # -- reports -----------------------------------------------------------------------
    def utilization(self) -> dict[int, float]:
        """Busy fraction of the last run's wall time, per worker."""
        return utilization(self.last.busy, self.last.wall) if self.last else {}

    def cpu_utilization(self) -> dict[int, float]:
        """CPU seconds of each worker's thread over the last run's wall time (not clipped)."""
        if not self.last or self.last.wall <= 0:
            return {}
        return {w: c / self.last.wall for w, c in self.last.cpu.items()}

    def trace(self) -> list[tuple]:
        """Last run's (worker, t_start, t_end, key, stage, step, direction) entries."""
        return list(self.last.trace) if self.last else []

    def write_trace(self, path: str | Path) -> Path:
        """Write the last run's timeline as JSON or CSV (by the file's suffix)."""
        wall = self.last.wall if self.last else None
        return write_trace(path, self.trace(), util=self.utilization(), wall=wall)


__all__ = ["Pipeline", "PipelineError", "RunResult"]
