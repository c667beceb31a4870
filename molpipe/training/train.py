"""Training: a run's settings through its ``Session`` (data → split → scaling → network →
optimizers → engine), epoch after epoch, into a run directory.

``train(config, out_dir)`` is the whole of it; ``Trainer`` holds a run's state between the
small steps of its epoch loop (train, account for every row, evaluate, keep the best,
checkpoint, stop early), so a resumed run continues from exactly that state.
"""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np

from molpipe.chem.domain import Domain
from molpipe.data.build import REJECTED_CELLS
from molpipe.data.checks import check_split, target_warnings
from molpipe.io.checkpoint import restore_state, state_arrays
from molpipe.io.model import save_model
from molpipe.nn.optim import averaged_weights
from molpipe.runtime.nonfinite import NonFiniteError
from molpipe.training.metrics import summary
from molpipe.training.result import EpochResult
from molpipe.training.run_dir import (keep_rejects, kernels_cached, model_meta, target_units,
                                      versions, write_run)
from molpipe.training.session import Session, describe_keys, evaluate_plan
from molpipe.training.stream import Plan, account_rows, train_plan
from molpipe.training.settings import LEGACY, SPLITS, TrainConfig


def train(config: TrainConfig, out_dir: str | Path, progress=None, resume: bool = False) -> dict:
    """Train per ``config``, write the run directory ``out_dir``, return the report.

    A checkpoint is written after every epoch; with ``resume`` the run continues from the
    newest valid checkpoint in ``out_dir`` (its own settings, data order and optimizer state).
    """
    from molpipe.io.checkpoint import load_checkpoint

    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    emit = progress or (lambda event, **kw: None)
    ckpt = None
    if resume:
        state, arrays, path = load_checkpoint(out_dir)
        config = TrainConfig.from_dict({**LEGACY, **state["config"]}, str(path))
        ckpt = (state, arrays)
        emit("preprocess", message=f"resuming from {path}")
    if config.backend == "mpi":   # MPI: ranks > 0 serve rank 0's workers until it is done
        from molpipe.runtime.mpi_rank import serve_unless_control

        if serve_unless_control(replicas=config.layout == "replicas"):
            return {}
    return Trainer(config, out_dir, progress, ckpt, t_start).run()


class Trainer:
    """One run: its session, network, optimizers, epoch plans and the state a checkpoint
    keeps. Molecules are packed from the store only as the pipeline admits them."""

    def __init__(self, config: TrainConfig, out_dir: Path, progress=None, ckpt=None,
                 t_start: float | None = None):
        self.config, self.out_dir, self.ckpt = config, out_dir, ckpt
        self.t_start = time.perf_counter() if t_start is None else t_start
        self.emit = progress or (lambda event, **kw: None)
        self.session = session = Session(config, progress=progress)
        self.prep, self.store, self.split = session.prep, session.store, session.split
        self.warnings = self._data_warnings()
        self.has_val = len(self.split["val"]) > 0
        self.scaling = session.fit_scaling()
        self.network = session.network()
        self.optimizers = session.optimizers(self.network)
        self.rng = np.random.default_rng(config.seed)
        self.size = session.instance_size()
        self.val_rows = validation_rows(self.split["val"], config)
        self.val_plan = session.plan(self.val_rows, None, 0)
        self.test_plan = session.plan(self.split["test"], None, self.val_plan.next_key)
        self.plan: Plan | None = None                 # the epoch's (indices only)
        # the state a checkpoint keeps
        self.key, self.partial = self.test_plan.next_key, None
        self.history, self.best, self.bad_epochs = [], float("inf"), 0
        self.best_state = self.network.state_dict()
        self.n_train_mols, self.train_seconds, self.first_epoch = 0, 0.0, 0
        self.last_train: EpochResult | None = None
        self.meta = model_meta(self.prep)
        self.domain = Domain.from_smiles(self.store.smiles, config.seed,
                                         rows=self.split["train"]).arrays()

    # -- the run ---------------------------------------------------------------------------
    def run(self) -> dict:
        if self.ckpt is not None:
            self._restore_checkpoint(*self.ckpt)
        self._announce()
        stop = self.bad_epochs >= self.config.patience
        with self.session.engine(self.network, self.optimizers, describe=self._describe) as engine:
            for epoch in range(self.first_epoch, self.config.epochs if not stop else self.first_epoch):
                if self._epoch(engine, epoch):
                    break
            final = self._final(engine)
        report = self._report(*final)
        write_run(self.out_dir, self.config, self.network, self.prep, report, self.history,
                  self.split, final[2], final[3], self.meta, self.domain)
        self.emit("done", report=report)
        return report

    def _describe(self, key) -> str:
        """The SMILES of the instance ``key`` (this epoch's, validation's or test's)."""
        plans = [p for p in (self.plan, self.val_plan, self.test_plan) if p is not None]
        return describe_keys(self.store, *plans)(key)

    def _data_warnings(self) -> list[str]:
        """Rejected rows and cells (copied into the run directory), thin splits, one-class
        tasks, constant targets: said once, before any work."""
        config, store, split = self.config, self.store, self.split
        warnings = keep_rejects(store, self.out_dir, str(config.data))
        warnings += check_split(split, sum(len(v) for v in split.values()), str(config.data),
                                asked=config.split_column is not None
                                or config.split not in SPLITS)
        warnings += target_warnings(store, split["train"], self.prep.task,
                                    self.out_dir / REJECTED_CELLS)
        for message in warnings:
            self.emit("warning", message=message)
        return warnings

    def _restore_checkpoint(self, state: dict, arrays: dict) -> None:
        self.best_state = restore_state(arrays, state["optimizers"], self.network, self.optimizers)
        self.rng.bit_generator.state = state["rng"]
        self.history, self.best, self.bad_epochs = state["history"], state["best"], state["bad_epochs"]
        self.n_train_mols, self.train_seconds = state["n_train_mols"], state["train_seconds"]
        self.key, self.first_epoch = state["key"], state["epoch"]
        self.partial = state.get("partial")
        if np.isfinite(self.best):
            # a kill between writing model/ and the checkpoint (or during model/'s swap) left
            # model/ newer than the checkpoint, or absent: rewrite it from the checkpoint
            self._save_model(self.best_state)

    def _announce(self) -> None:
        if not kernels_cached():
            self.emit("preprocess", message="compiling kernels (first run only)…")
        split = self.split
        self.emit("start", epochs=self.config.epochs, n_train=len(split["train"]),
                  n_val=len(split["val"]), n_test=len(split["test"]),
                  n_val_used=len(self.val_rows),
                  parameters=self.network.n_parameters, first_epoch=self.first_epoch,
                  task=self.prep.task, aggregation=self.network.config.aggregation,
                  baseline=self.scaling.baseline,
                  units=target_units(self.config.data, self.prep.targets))

    def _epoch(self, engine, epoch: int) -> bool:
        """Train, evaluate, keep and checkpoint epoch ``epoch`` (0-based); True to stop."""
        config, split = self.config, self.split
        lr = lr_at(epoch, config.epochs, config.lr)
        for opt in self.optimizers.values():
            opt.lr = lr
        if self.partial is not None:         # resuming inside this epoch: the same instances
            self.rng.bit_generator.state, self.key = self.partial["rng"], self.partial["key"]
        epoch_start = {"rng": self.rng.bit_generator.state, "key": self.key}
        self.plan = plan = self.session.plan(split["train"], self.rng, self.key)
        self.key = plan.next_key

        def save_partial(position: int, done: EpochResult) -> None:
            self._checkpoint(epoch, part=position, partial={
                **epoch_start, "position": position, "seconds": done.seconds,
                "losses": {str(k): v for k, v in done.losses.items()},
                "skipped": {str(k): v for k, v in done.skipped.items()}})

        res = train_plan(engine, plan, self.store, self.partial, save_partial,
                         config.checkpoint_minutes, config.max_active_keys,
                         on_result=lambda k, loss, n: self.emit("instance", n=n, loss=loss))
        self.partial = None
        self.last_train = res
        seen = account_rows(epoch + 1, plan, res, split["train"])
        _require_finite(self.network.state_dict(), f"epoch {epoch + 1}: after training, parameter")
        if res.skipped:
            describe = describe_keys(self.store, plan)
            self.emit("skipped", epoch=epoch + 1, n=len(res.skipped),
                      message="; ".join(f"key {k} [{describe(k)}]: {why}"
                                        for k, why in list(res.skipped.items())[:5]))
        self.n_train_mols += len(split["train"])
        self.train_seconds += res.seconds
        val_metrics, row, current = self._evaluate_epoch(engine, epoch, lr, res, seen)
        self.history.append(row)
        if row["val_score"] < self.best or not self.has_val:   # no validation: the last epoch
            self.best = row["val_score"] if self.has_val else -1.0
            self.best_state, self.bad_epochs = current, 0
            _require_finite(current, f"epoch {epoch + 1}: model parameter")
            self._save_model(current)
        else:
            self.bad_epochs += 1
        self._checkpoint(epoch + 1)
        self.emit("epoch", utilization=res.utilization, in_flight_max=res.in_flight_max,
                  val_summary=summary(self.prep.task, val_metrics) if self.has_val else {}, **row)
        if self.bad_epochs >= config.patience:
            if epoch + 1 < config.epochs:
                self.emit("stopped", epoch=epoch + 1, patience=config.patience,
                          best_epoch=_best_epoch(self.history))
            return True
        return False

    def _evaluate_epoch(self, engine, epoch: int, lr: float, res: EpochResult, seen: dict):
        """(validation metrics, the epoch's metrics.csv row, the parameters evaluated)."""
        split, prep = self.split, self.prep
        with averaged_weights(self.network.stages, self.optimizers):   # evaluated, kept: averages
            val_metrics, _ = evaluate_plan(engine, prep, self.val_plan, self.val_rows)
            t_test = time.perf_counter()
            test_metrics = (evaluate_plan(engine, prep, self.test_plan, split["test"])[0]
                            if self.config.track_test else {})
            t_test = time.perf_counter() - t_test
            current = self.network.state_dict()
        val_score = score(val_metrics, prep.task, self.scaling.std) if self.has_val else float("nan")
        row = {"epoch": epoch + 1, "train_loss": _mean_finite(res.losses.values()),
               "val_score": val_score, "lr": lr,
               "epoch_seconds": res.seconds, "wall_seconds": time.perf_counter() - self.t_start,
               "train_seconds": self.train_seconds,          # training only, summed over epochs
               "train_molecules_per_second": len(split["train"]) / max(res.seconds, 1e-9),
               **seen,
               **{f"val_{t}_{m}": v for t, ms in val_metrics.items() for m, v in ms.items()
                  if m != "n"}}
        if self.config.track_test:   # the test passes' seconds (never selected on), summed
            before = self.history[-1].get("test_seconds", 0.0) if self.history else 0.0
            row["test_seconds"] = float(before) + t_test
        row.update({f"test_{t}_{m}": v for t, ms in test_metrics.items()
                    for m, v in ms.items() if m != "n"})
        return val_metrics, row, current

    def _save_model(self, state: dict) -> None:
        save_model(self.out_dir / "model", self.network.config, state, self.meta, self.domain)

    def _checkpoint(self, epoch: int, part: int | None = None, partial: dict | None = None) -> None:
        """Checkpoint at the start of ``epoch`` (0-based), or ``part`` instances into it."""
        from molpipe.io.checkpoint import save_checkpoint

        arrays, scalars = state_arrays(self.network, self.optimizers, self.best_state)
        _require_finite(arrays, f"epoch {epoch if part is None else epoch + 1}: checkpoint array")
        state = {"epoch": epoch, "config": self.config.to_dict(),
                 "rng": self.rng.bit_generator.state, "history": self.history,
                 "best": self.best, "bad_epochs": self.bad_epochs, "key": self.key,
                 "n_train_mols": self.n_train_mols, "train_seconds": self.train_seconds,
                 "optimizers": scalars}
        if partial is not None:
            state["partial"] = partial
        save_checkpoint(self.out_dir, epoch, state, arrays,
                        **({} if part is None else {"part": part}))

    def _final(self, engine):
        """The best parameters' validation and test metrics, test predictions and trace."""
        self.network.load_state_dict(self.best_state)
        split, prep = self.split, self.prep
        val_metrics, _ = evaluate_plan(engine, prep, self.val_plan, self.val_rows)
        test_metrics, P_test = evaluate_plan(engine, prep, self.test_plan, split["test"])
        last = self.last_train
        entries = getattr(engine, "trace", lambda: [])() if last else []
        trace = None
        if entries:
            trace = {"entries": entries, "wall": last.seconds,
                     "workers": getattr(engine, "worker_names", {}),
                     "utilization": last.utilization}
        return val_metrics, test_metrics, P_test, trace

    def _report(self, val_metrics: dict, test_metrics: dict, P_test, trace) -> dict:
        config, prep, last = self.config, self.prep, self.last_train
        return {
            "dataset": config.data,
            "targets": prep.targets,
            "task": prep.task,
            "split": config.split if config.split_column is None
                     else f"column {config.split_column}",
            "from_model": self.session.transfer,
            "split_sizes": {k: int(len(v)) for k, v in self.split.items()},
            # --val-max: epochs were selected (and val scored) on a seeded sample of val
            "validation": {"rows_used": int(len(self.val_rows)),
                           "rows": int(len(self.split["val"])), "val_max": config.val_max,
                           "sampled": bool(len(self.val_rows) < len(self.split["val"]))},
            "seed": config.seed,
            "schedule": config.schedule,
            "epochs": len(self.history),
            "best_epoch": _best_epoch(self.history),
            "wall_seconds": time.perf_counter() - self.t_start,
            "started_unix": time.time() - (time.perf_counter() - self.t_start),   # t_start's
            "train_seconds": self.train_seconds,
            "train_molecules_per_second": self.n_train_mols / max(self.train_seconds, 1e-9),
            "val": val_metrics,
            "test": test_metrics,
            "val_summary": summary(prep.task, val_metrics),
            "test_summary": summary(prep.task, test_metrics),
            "network": self.network.config.to_dict(),
            "baseline": self.scaling.baseline,
            "units": target_units(config.data, prep.targets),
            "warnings": self.warnings,
            "targets_not_numbers": self.store.targets_not_numbers,
            "parameters": self.network.n_parameters,
            "molecules_per_instance": self.size,
            "utilization": last.utilization if last else {},
            # each worker thread's CPU seconds over wall seconds in the last training epoch
            "worker_cpu": last.cpu if last else {},
            "resumed_from_epoch": self.first_epoch if self.ckpt is not None else None,
            "skipped_instances": sum(h.get("skipped_instances", 0) for h in self.history),
            # bit-for-bit parameters from a seed: reference, sync, and async with one instance
            # in flight; the data order (instance contents per epoch) always
            # (tests/test_faults.py::test_reproducible_*)
            "reproducible": {"parameters": config.schedule != "async" or config.max_active_keys == 1,
                             "data_order": True},
            "config": config.to_dict(),
            "versions": versions(),
        }


def lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Warm up over 2 epochs from lr/10, then decay exponentially to lr/10 at the end."""
    warm = min(2, max(epochs - 1, 1))
    if epoch < warm:
        return lr * (0.1 + 0.9 * epoch / warm)
    frac = (epoch - warm) / max(epochs - 1 - warm, 1)
    return lr * (0.1 ** frac)


def score(metrics: dict, task: str, std: np.ndarray) -> float:
    """One number to select on (lower is better): mean scaled RMSE, or minus mean AUC
    (tasks with one class left out); NaN when no target has a value."""
    if task == "regression":
        v = np.array([m["rmse"] / s for m, s in zip(metrics.values(), std)])
    else:
        v = -np.array([m["auc"] for m in metrics.values()])
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _best_epoch(history: list) -> int:
    """1-based epoch of the best validation score; the last epoch when none was scored."""
    scores = np.array([h["val_score"] for h in history], np.float64)
    return int(np.nanargmin(scores)) + 1 if np.isfinite(scores).any() else len(history)


def validation_rows(val: np.ndarray, config: TrainConfig) -> np.ndarray:
    """The validation rows epochs are selected on: all of ``val``, or with ``val_max`` a
    sample of that many drawn with the split's seed (sorted)."""
    if config.val_max is None or len(val) <= config.val_max:
        return val
    seed = config.seed if config.split_seed is None else config.split_seed
    return np.sort(np.random.default_rng(seed).choice(val, config.val_max, replace=False))


def _mean_finite(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _require_finite(arrays: dict, what: str) -> None:
    """NonFiniteError naming the first array holding NaN/inf: nothing poisoned is saved."""
    for k, a in arrays.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise NonFiniteError(f"{what} {k!r} holds {int(np.isnan(a).sum())} NaN and "
                                 f"{int(np.isinf(a).sum())} inf values; nothing saved "
                                 "(the last checkpoint stays as it was)")
