"""The sync and async schedules: the network's stages as workers of the pipeline runtime."""

from __future__ import annotations

from molpipe.engine import EpochResult
from molpipe.nn.optim import Adam
from molpipe.runtime.pipeline import Pipeline


class PipelineEngine:
    """Trains and predicts through a ``molpipe.runtime.Pipeline`` (threads by default)."""

    def __init__(self, network, optimizers: dict, *, schedule: str = "async",
                 max_active_keys: int = 8, min_update_frequency: int = 1,
                 backend: str = "thread", placement: dict | None = None, trace: bool = False,
                 describe=None, stall_timeout: float = 120.0):
        self.schedule = schedule
        self.network = network
        # every worker needs an optimizer; parameter-free stages (the loss) get an empty one
        opts = {name: optimizers.get(name) or Adam({}) for name in network.stages}
        self.pipeline = Pipeline(
            network.stages, opts, network.route, network.first,
            max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
            schedule=schedule, placement=placement, backend=backend, trace=trace,
            stall_timeout=stall_timeout, describe=describe)
        self.worker_names = self._worker_names(placement)

    def _worker_names(self, placement) -> dict[int, str]:
        placement = placement or {s: i for i, s in enumerate(self.network.stages)}
        names: dict[int, list[str]] = {}
        for stage, wid in placement.items():
            names.setdefault(wid, []).append(stage)
        return {wid: "+".join(stages) for wid, stages in names.items()}

    def _result(self, res) -> EpochResult:
        return EpochResult(losses=res.loss, preds=res.pred, seconds=res.wall,
                           utilization=self.utilization())

    def train(self, items, on_result=None) -> EpochResult:
        sizes = {key: inst.n_mols for key, inst in items}
        cb = None if on_result is None else (lambda k, loss, pred: on_result(k, loss, sizes[k]))
        return self._result(self.pipeline.run([(k, inst, True) for k, inst in items], cb))

    def predict(self, items) -> EpochResult:
        return self._result(self.pipeline.run([(k, inst, False) for k, inst in items]))

    def utilization(self) -> dict[str, float]:
        return {self.worker_names[w]: f for w, f in self.pipeline.utilization().items()}

    def trace(self):
        return self.pipeline.trace()

    def close(self) -> None:
        self.pipeline.close()

    def __enter__(self):
        self.pipeline.start()
        return self

    def __exit__(self, *exc):
        self.close()
