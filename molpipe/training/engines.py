"""Engines: the schedules that move instances through the network's stages.

``reference`` runs one instance after another through every stage and steps every stage's
optimizer after each instance (the oracle). ``sync`` and ``async`` run the same stages as
workers of the pipeline runtime. Every engine offers the same two calls: ``train(items)``
and ``predict(items)``, where ``items`` is a list of ``(key, Instance)``.
"""

from __future__ import annotations

import time

import numpy as np

from molpipe.kernels import one_blas_thread
from molpipe.nn.optim import Adam
from molpipe.runtime.defaults import (EXCHANGE_EVERY, MAX_ACTIVE_KEYS, MIN_UPDATE_FREQUENCY,
                                      STALL_TIMEOUT)
from molpipe.runtime.memory import keep_freed_memory
from molpipe.runtime.replicas import layout_placement, resolve_layout
from molpipe.runtime.nonfinite import NonFiniteError, check_policy, first_nonfinite
from molpipe.training.pipeline_engine import PipelineEngine
from molpipe.training.result import EpochResult


def make_optimizers(network, lr: float, weight_decay: float = 0.0, average: float = 0.0,
                    freeze=()) -> dict:
    """One Adam per stage that has parameters: every stage updates (and averages) itself;
    a stage in ``freeze`` gets none (its parameters stay as they are)."""
    return {name: Adam(stage.params, lr=lr, weight_decay=weight_decay, average=average)
            for name, stage in network.stages.items() if stage.params and name not in freeze}


class ReferenceEngine:
    """The sequential reference trainer: forward the whole path, backward, step every stage."""

    schedule = "reference"

    def __init__(self, network, optimizers: dict, describe=None, on_nonfinite: str | None = None):
        self.network, self.optimizers = network, optimizers
        self.describe = describe or (lambda key: "")
        self.on_nonfinite = check_policy(on_nonfinite)
        self._blas = None

    def _nonfinite(self, key, inst, loss: float) -> str | None:
        """Why ``key``'s loss or gradients are not finite (None when they are, or unchecked)."""
        if self.on_nonfinite is None:
            return None
        if not np.isfinite(loss):
            return f"non-finite loss {loss}"
        for name in dict.fromkeys(name for name, _ in self.network.path(inst)):
            bad = first_nonfinite(self.network.stages[name].grads)
            if bad is not None:
                return f"stage {name!r} gradient {bad!r} is not finite"
        return None

    def train(self, items, on_result=None) -> EpochResult:
        out, t0 = EpochResult(), time.perf_counter()
        for key, inst in items:
            loss, pred = self.network.forward_backward(key, inst)
            why = self._nonfinite(key, inst, loss)
            if why is not None:
                if self.on_nonfinite == "stop":
                    raise NonFiniteError(f"reference trainer stopped on key {key!r} "
                                         f"[{self.describe(key)}]: {why} "
                                         "(on_nonfinite='skip' skips such instances)")
                self.network.zero_grad()
                out.losses[key], out.skipped[key] = float("nan"), why
                continue
            # only the stages on the instance's own path step (an Adam step on a zero
            # gradient would still move a skipped stage's parameters)
            for name in dict.fromkeys(name for name, _ in self.network.path(inst)):
                if name in self.optimizers:
                    self.optimizers[name].step(self.network.stages[name].grads, 1.0)
                    self.network.stages[name].zero_grad()
            out.losses[key], out.preds[key] = float(loss), pred
            if on_result is not None:
                on_result(key, float(loss), inst.n_mols)
        out.seconds = time.perf_counter() - t0
        return out

    def predict(self, items) -> EpochResult:
        out, t0 = EpochResult(), time.perf_counter()
        for key, inst in items:
            out.preds[key] = self.network.predict(inst)
        out.seconds = time.perf_counter() - t0
        return out

    def close(self) -> None:
        if self._blas is not None:
            self._blas.unregister()
            self._blas = None

    def __enter__(self):
        # one core: small matmuls run fastest on one BLAS thread
        self._blas = one_blas_thread()
        return self

    def __exit__(self, *exc):
        self.close()


def make_engine(schedule: str, network, optimizers: dict, *,
                max_active_keys: int = MAX_ACTIVE_KEYS,
                min_update_frequency: int = MIN_UPDATE_FREQUENCY, backend: str = "thread",
                trace: bool = False, describe=None, stall_timeout: float = STALL_TIMEOUT,
                weight_stashing: bool = False, on_nonfinite: str | None = "stop",
                sync_group: int | None = None, placement: dict | None = None,
                update_criterion: str = "count", admission: str = "instances",
                weight_prediction: bool = False, layout: str = "stages",
                replicas: int | None = None, store=None, exchange_every: int = EXCHANGE_EVERY):
    """Build the engine for ``schedule`` (reference, sync or async).

    ``update_criterion``: when a worker updates (``count``: every ``min_update_frequency``
    gradients; ``atoms:N``, ``gradnorm:X[:MAXN]``, ``backlog:MAXN``: runtime/accumulator.py).
    ``admission``: ``instances`` (``max_active_keys`` only) or ``atoms:N`` (async: atoms in
    flight too). ``weight_prediction``: async forwards on extrapolated weights (SpecTrain).
    The reference trainer has none of these to apply and ignores them.

    ``sync_group``: instances per update of the sync schedule (default ``max_active_keys``).
    ``placement``: {stage: worker} of the pipeline schedules (default one worker per stage).
    ``layout``, ``replicas``: the pipeline's workers (``molpipe.runtime.replicas.LAYOUTS``:
    one per stage, one for all stages, or ``replicas`` fused copies on shared parameters;
    with ``backend="mpi"``: one replica per MPI rank, each on its own parameters, trained on
    its share of ``store``'s rows and exchanging parameter deltas every ``exchange_every``
    updates of a stage: ``replica_engine.py``).

    ``on_nonfinite``: NaN/inf in a training instance's loss, activations or gradients stops
    the run ("stop"), skips the instance ("skip") or is not checked (None).
    """
    keep_freed_memory()        # kernel outputs reuse freed memory (once per process)
    layout = resolve_layout(layout, schedule, backend, placement)
    if backend == "mpi" and layout == "replicas" and schedule == "async":
        from molpipe.training.replica_engine import ReplicaEngine

        return ReplicaEngine(network, optimizers, store=store, max_active_keys=max_active_keys,
                             min_update_frequency=min_update_frequency, trace=trace,
                             describe=describe, stall_timeout=stall_timeout,
                             weight_stashing=weight_stashing, on_nonfinite=on_nonfinite,
                             update_criterion=update_criterion, admission=admission,
                             weight_prediction=weight_prediction, exchange_every=exchange_every,
                             replicas=replicas)
    placement, replicas = layout_placement(layout, network.stages, placement, replicas)
    if schedule == "reference":
        return ReferenceEngine(network, optimizers, describe=describe, on_nonfinite=on_nonfinite)
    return PipelineEngine(network, optimizers, schedule=schedule, max_active_keys=max_active_keys,
                          min_update_frequency=min_update_frequency, backend=backend, trace=trace,
                          describe=describe, stall_timeout=stall_timeout,
                          weight_stashing=weight_stashing, on_nonfinite=on_nonfinite,
                          sync_group=sync_group, placement=placement, replicas=replicas,
                          update_criterion=update_criterion, admission=admission,
                          weight_prediction=weight_prediction)


def gather_predictions(preds: dict, groups: dict, n_rows: int, n_targets: int) -> np.ndarray:
    """Scatter per-instance predictions back to rows: ``groups[key]`` lists each key's rows."""
    P = np.full((n_rows, n_targets), np.nan, dtype=np.float64)
    for key, rows in groups.items():
        P[rows] = preds[key]
    return P
