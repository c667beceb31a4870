"""molpipe bench --to-accuracy: each schedule's training seconds until its validation error
first reaches a target (by default the reference trainer's best over its own default run).

Throughput alone rewards stale updates that learn nothing: here every schedule trains the
same initial network (one seed) on the same instances in the same order per epoch, with
``molpipe train``'s learning-rate schedule, and is timed until it has learnt as much as the
reference trainer did. Seconds are training seconds summed over epochs; the validation
passes after every epoch are timed apart (``eval_seconds``).
"""

from __future__ import annotations

import math
import os
import platform
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from molpipe.measure.bench import BenchConfig, engine_fields, schedule_settings
from molpipe.nn.optim import averaged_weights
from molpipe.runtime.nonfinite import NonFiniteError
from molpipe.training.run_dir import versions
from molpipe.training.session import Session, evaluate_items, make_items
from molpipe.training.settings import DEFAULTS
from molpipe.training.train import lr_at, score

#: the schedules a time-to-accuracy run trains by default (reference-x2 trains two networks)
ACCURACY_SCHEDULES = ("reference", "sync", "sync-each", "async-stages", "async")


@dataclass
class Goal:
    """What a schedule trains towards, and for how long at most."""

    epochs: int = DEFAULTS.epochs        # the reference's run (molpipe train's default epochs)
    target: float | None = None          # None: the reference's best validation error
    max_epochs: int | None = None        # None: 2 x epochs
    max_seconds: float | None = None     # training seconds of one schedule (None: no cap)

    def __post_init__(self):
        if self.epochs < 1:
            raise ValueError(f"--epochs must be at least 1, not {self.epochs}")
        if self.max_epochs is not None and self.max_epochs < 1:
            raise ValueError(f"--max-epochs must be at least 1, not {self.max_epochs}")
        if self.max_seconds is not None and not self.max_seconds > 0:
            raise ValueError(f"--max-seconds must be above 0, not {self.max_seconds}")
        if self.target is not None and not math.isfinite(self.target):
            raise ValueError(f"--target must be a finite number, not {self.target}")

    @property
    def cap(self) -> int:
        return self.max_epochs or 2 * self.epochs


def metric_name(task: str, n_targets: int) -> str:
    """The name of ``val_error``'s number for ``task``."""
    if task == "classification":
        return "1 - auc"
    return "rmse" if n_targets == 1 else "mean scaled rmse"


def val_error(metrics: dict, task: str, std: np.ndarray) -> float:
    """The validation error ``molpipe train`` selects its best epoch on, lower is better:
    RMSE in data units (one regression target), the mean of RMSE / scale (several), or
    1 - mean AUC (classification); NaN when no target has a value."""
    s = score(metrics, task, std)
    if task == "classification":
        return 1.0 + s
    return s * float(std[0]) if len(std) == 1 else s


def first_reached(curve: list, target: float) -> tuple[int, float] | None:
    """(epoch, training seconds) of the first point of ``curve`` at or below ``target``."""
    for epoch, seconds, err in curve:
        if err is not None and math.isfinite(err) and err <= target:
            return epoch, seconds
    return None


def check_schedules(names) -> None:
    """ValueError for a name that is no schedule (``schedule_settings``) or has no time to
    accuracy (reference-x2)."""
    for name in names:
        if schedule_settings(name)["copies"] != 1:
            raise ValueError(f"{name!r} trains two networks at once: it has no time to "
                             f"accuracy (choose from {', '.join(ACCURACY_SCHEDULES)} and "
                             "their variants)")


def to_accuracy(config: BenchConfig, goal: Goal, progress=None) -> dict:
    """Train each schedule of ``config`` (reference first) until its validation error first
    reaches the target; per schedule its seconds and epochs to it, or None.

    Returns ``{"to_accuracy": {target, metric, target_source, ..., schedules}, "settings"}``.
    """
    emit = progress or (lambda event, **kw: None)
    names = list(dict.fromkeys(config.schedules))
    check_schedules(names)
    if goal.target is None and "reference" not in names:
        names.insert(0, "reference")       # the target is the reference's best
    if "reference" in names:
        names.remove("reference")
        names.insert(0, "reference")
    session = Session(config.settings())
    prep, split = session.prep, session.prep.split
    if not len(split["val"]):
        raise ValueError(f"--to-accuracy needs a validation split; {config.data}'s has no "
                         "molecules")
    rows = split["train"][: config.molecules] if config.molecules else split["train"]
    rows = np.sort(np.tile(rows, config.replicate))
    session.fit_scaling()
    if not config.molecules_per_instance:
        config = replace(config, molecules_per_instance=session.instance_size())
    size = config.molecules_per_instance
    val_items, val_members, key = make_items(prep, split["val"], size, None, 0)
    run = _Runner(session, config, goal, rows, (val_items, val_members), key, emit)
    run.warm()
    target, source = goal.target, "given"
    out = {}
    for name in names:
        own = name == "reference" and goal.target is None
        r = run.schedule(name, None if own else target, goal.epochs if own else goal.cap)
        if own:
            target, source = r["best"], "reference best"
            if target is not None:
                hit = first_reached(r["curve"], target)
                r["epochs_to_target"], r["seconds_to_target"] = hit or (None, None)
        out[name] = r
    ref = out.get("reference", {}).get("seconds_to_target")
    for r in out.values():
        s = r["seconds_to_target"]
        r["speedup_vs_reference"] = ref / s if ref and s else None
    metric = metric_name(prep.task, len(prep.targets))
    return {"to_accuracy": {"target": target, "metric": metric, "target_source": source,
                            "reference_epochs": goal.epochs, "max_epochs": goal.cap,
                            "max_seconds": goal.max_seconds, "n_val": int(len(split["val"])),
                            "schedules": out},
            "settings": {**asdict(config), **{f"goal_{k}": v for k, v in asdict(goal).items()},
                         "cores": os.cpu_count(), "machine": platform.machine(),
                         "versions": versions()}}


class _Runner:
    """What every schedule's run shares: the session, the training rows, the instance size,
    the validation instances and the first training key."""

    def __init__(self, session: Session, config: BenchConfig, goal: Goal, rows: np.ndarray,
                 val: tuple, first_key: int, emit):
        self.session, self.config, self.goal, self.rows = session, config, goal, rows
        self.val_items, self.val_members = val
        self.first_key, self.emit = first_key, emit
        self.task, self.std = session.prep.task, session.scaling.std

    def warm(self) -> None:
        """Compile / warm the kernels on a throwaway network (its own training and a
        validation pass), so no schedule's first epoch pays for it."""
        s, size = self.session, self.config.molecules_per_instance
        warm, _, _ = make_items(s.prep, self.rows[: 4 * size], size, None, self.first_key)
        network = s.network()
        with s.engine(network, s.optimizers(network), schedule="reference") as engine:
            engine.train(warm)
            engine.predict(self.val_items[:2])

    def schedule(self, name: str, target: float | None, cap: int) -> dict:
        """Train schedule ``name`` for at most ``cap`` epochs (or ``max_seconds``), until
        its validation error is at or below ``target`` (None: every epoch of ``cap``)."""
        s, config, goal = self.session, self.config, self.goal
        settings = schedule_settings(name)
        kind, fields = settings["kind"], engine_fields(config, settings)
        sync_group = fields["min_update_frequency"] if settings["each"] else None
        network = s.network()                 # the same initial network: the seed's
        optimizers = s.optimizers(network)
        rng, key = np.random.default_rng(config.seed), self.first_key   # the same data order
        r = {"kind": kind, "seconds_to_target": None, "epochs_to_target": None, "best": None,
             "best_epoch": None, "epochs": 0, "train_seconds": 0.0, "eval_seconds": 0.0,
             "molecules_per_second": None, "stopped_by": f"max_epochs ({cap})", "curve": []}
        if kind != "reference":
            r.update(fields)
        if sync_group:
            r["instances_per_update"] = sync_group
        molecules, best = 0, math.inf
        with s.engine(network, optimizers, schedule=kind, sync_group=sync_group, trace=False,
                      **fields) as engine:
            for epoch in range(cap):
                lr = lr_at(min(epoch, goal.epochs - 1), goal.epochs, s.config.lr)
                for opt in optimizers.values():
                    opt.lr = lr
                items, _, key = make_items(s.prep, self.rows, config.molecules_per_instance,
                                           rng, key)
                try:
                    res = engine.train(items)
                except NonFiniteError as err:
                    r["stopped_by"] = f"non-finite: {err}"
                    break
                molecules += sum(inst.n_mols for _, inst in items)
                r["train_seconds"] += res.seconds
                t0 = time.perf_counter()
                with averaged_weights(network.stages, optimizers):   # as train evaluates
                    metrics, _ = evaluate_items(engine, self.val_items, self.val_members,
                                                s.prep, s.prep.split["val"])
                r["eval_seconds"] += time.perf_counter() - t0
                err = val_error(metrics, self.task, self.std)
                r["epochs"] = epoch + 1
                r["curve"].append([epoch + 1, r["train_seconds"], _finite(err)])
                if math.isfinite(err) and err < best:
                    best, r["best"], r["best_epoch"] = err, err, epoch + 1
                self.emit("epoch", schedule=name, epoch=epoch + 1, seconds=res.seconds,
                          val_error=err)
                if target is not None and math.isfinite(err) and err <= target:
                    r["epochs_to_target"], r["seconds_to_target"] = epoch + 1, r["train_seconds"]
                    r["stopped_by"] = "target"
                    break
                if goal.max_seconds is not None and r["train_seconds"] >= goal.max_seconds:
                    r["stopped_by"] = f"max_seconds ({goal.max_seconds:g})"
                    break
            else:
                if target is None:
                    r["stopped_by"] = f"epochs ({cap})"
        if r["train_seconds"] > 0:
            r["molecules_per_second"] = molecules / r["train_seconds"]
        return r


def _finite(x: float) -> float | None:
    return float(x) if math.isfinite(x) else None
