"""The sync and async schedules: the network's stages as workers of the pipeline runtime."""

from __future__ import annotations

from molpipe.training.result import EpochResult
from molpipe.nn.optim import Adam, Frozen
from molpipe.runtime.defaults import MAX_ACTIVE_KEYS, MIN_UPDATE_FREQUENCY, STALL_TIMEOUT
from molpipe.nn.network import STAGE_COSTS
from molpipe.runtime.pipeline import Pipeline


class PipelineEngine:
    """Trains and predicts through a ``molpipe.runtime.Pipeline`` (threads by default)."""

    def __init__(self, network, optimizers: dict, *, schedule: str = "async",
                 max_active_keys: int = MAX_ACTIVE_KEYS,
                 min_update_frequency: int = MIN_UPDATE_FREQUENCY,
                 backend: str = "thread", placement: dict | None = None, trace: bool = False,
                 describe=None, stall_timeout: float = STALL_TIMEOUT, weight_stashing: bool = False,
                 on_nonfinite: str | None = "stop", sync_group: int | None = None,
                 update_criterion: str = "count", admission: str = "instances",
                 weight_prediction: bool = False, replicas: int = 1):
        self.schedule = schedule
        self.network = network
        # every worker needs an optimizer; parameter-free stages (the loss) get an empty one,
        # a stage with parameters but no optimizer (--freeze) one that never updates
        opts = {name: optimizers.get(name) or (Frozen() if stage.params else Adam({}))
                for name, stage in network.stages.items()}
        backend_options = None
        if backend == "mpi":   # every worker rank rebuilds the network from its config and seed
            placement = placement or mpi_placement(network)
            backend_options = {"build": rebuild_spec(network, opts)}
        self.pipeline = Pipeline(
            network.stages, opts, network.route, network.first, backend_options=backend_options,
            max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
            schedule=schedule, placement=placement, backend=backend, trace=trace,
            stall_timeout=stall_timeout, describe=describe, weight_stashing=weight_stashing,
            on_nonfinite=on_nonfinite, sync_group=sync_group, criterion=update_criterion,
            admission=admission, weight_prediction=weight_prediction, replicas=replicas)
        self.worker_names = self._worker_names(placement, replicas)
        self._trained = None           # the last training run's RunResult (for its timeline)

    def _worker_names(self, placement, replicas: int = 1) -> dict[int, str]:
        """Worker id -> its stages joined by '+' (replica r > 0: suffixed '#r'; a worker
        hosting every stage is 'all')."""
        placement = placement or {s: i for i, s in enumerate(self.network.stages)}
        names: dict[int, list[str]] = {}
        for stage, wid in placement.items():
            names.setdefault(wid, []).append(stage)
        one = {wid: "all" if len(names) == 1 else "+".join(stages)
               for wid, stages in names.items()}
        n = len(one)
        return {wid + r * n: name + (f"#{r}" if r else "")
                for r in range(replicas) for wid, name in one.items()}

    def _result(self, res) -> EpochResult:
        return EpochResult(losses=res.loss, preds=res.pred, seconds=res.wall,
                           in_flight_max=res.n_in_flight_max,
                           utilization=self.utilization(), skipped=res.skipped,
                           cpu={self.worker_names[w]: f
                                for w, f in self.pipeline.cpu_utilization().items()})

    def train(self, items, on_result=None) -> EpochResult:
        """Train on ``items`` ((key, Instance) pairs: a list, or an iterator the control node
        draws from as it admits)."""
        admitted, cb = self._admitting(on_result)
        res = self._trained = self.pipeline.run(admitted(items), cb)
        return self._result(res)

    @staticmethod
    def _admitting(on_result):
        """(``admitted(pairs)``: (key, Instance) pairs as training items, each noting its
        molecules as the control node draws it; the run's callback handing ``on_result``
        (key, loss, molecules))."""
        sizes = {}                  # key -> molecules, while in flight

        def admitted(pairs):
            for k, inst in pairs:
                if on_result is not None:
                    sizes[k] = inst.n_mols
                yield k, inst, True

        cb = None if on_result is None else (lambda k, loss, pred: on_result(k, loss, sizes.pop(k)))
        return admitted, cb

    def predict(self, items) -> EpochResult:
        return self._result(self.pipeline.run((k, inst, False) for k, inst in items))

    def utilization(self) -> dict[str, float]:
        return {self.worker_names[w]: f for w, f in self.pipeline.utilization().items()}

    def trace(self) -> list[tuple]:
        """The last training run's timeline (evaluation runs since do not replace it)."""
        return list(self._trained.trace) if self._trained else []

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self):
        self.pipeline.start()
        return self

    def __exit__(self, *exc):
        self.close()


# -- MPI: what the worker ranks build ------------------------------------------------------------


def mpi_placement(network) -> dict[str, int]:
    """Balanced contiguous placement of the stages on the job's worker ranks (all but rank 0)."""
    from molpipe.runtime.mpi import balanced_placement, world

    return balanced_placement(list(network.stages), world().size - 1, STAGE_COSTS)


def rebuild_spec(network, optimizers: dict) -> dict:
    """``build`` of the MPI backend: ``rebuild(**args)`` gives every rank the same network."""
    st = network.stages
    args = {"network": network.config.to_dict(), "d_v": int(st["embed"].params["W_v"].shape[0]),
            "d_e": int(st["embed"].params["W_e"].shape[0]),
            "n_targets": int(st["loss"].buffers["mean"].size),
            "optimizers": {s: f"{type(o).__module__}:{type(o).__qualname__}"
                           for s, o in optimizers.items()}}
    return {"fn": "molpipe.training.pipeline_engine:rebuild", "args": args}


def rebuild(network: dict, d_v: int, d_e: int, n_targets: int, optimizers: dict):
    """On a worker rank: (stages, optimizers, route) built as rank 0 built them (rank 0 then
    pushes its parameters, buffers and optimizer state, e.g. on resume)."""
    from molpipe.nn.network import NetworkConfig, build_network
    from molpipe.runtime.wire import resolve

    net = build_network(NetworkConfig.from_dict(network), d_v, d_e, n_targets)
    opts = {s: resolve(optimizers[s])(net.stages[s].params, lr=1e-3) for s in net.stages}
    return net.stages, opts, net.route

