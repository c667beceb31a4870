"""Hyperparameter search (``molpipe hpopt``): Optuna trials of ``molpipe.training.train`` on
one split and seed, each pruned early on its validation curve.

Every trial is a normal training run (its own run directory under ``OUT/trials``) of the base
settings with five of them drawn from ``SPACE``: hidden size, propagation rounds, learning
rate (log scale), readout dropout and readout aggregation. The split and the seed are the
base's in every trial, so the trials differ only in what was drawn. The objective is the
trial's best validation error (``val_error``); after every epoch the running best is reported
to the trial, and when the pruner says so the training stops there: the progress callback
raises ``Pruned``, which leaves ``train`` through its engine's context manager (the pipeline's
workers stopped and joined), and the pruned trial's run directory is removed.

The sampler is Optuna's TPE seeded with the base seed and the study lives in memory, so the
same command draws the same trials. The base settings' own point is the first trial (when it
lies in the space): the search is measured against where it started. Written as it goes:
``trials.csv`` (one row per trial), ``best_config.toml`` (the best trial's full settings,
which ``molpipe train --config`` trains again) and, at the end, ``hpopt.json``.
"""

from __future__ import annotations

import csv
import dataclasses
import json
import math
import shutil
import time
from dataclasses import dataclass
from pathlib import Path

from molpipe.data.errors import DataError
from molpipe.nn.readout import AGGREGATIONS
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train

TRIALS_CSV, BEST_TOML, SUMMARY_JSON, TRIALS_DIR = ("trials.csv", "best_config.toml",
                                                   "hpopt.json", "trials")
INSTALL = 'pip install "molpipe[search]"'


class HpoptError(ValueError):
    """A search that cannot run (names the option or the reason)."""


class Pruned(Exception):
    """Raised from a trial's progress callback to stop its training after ``epoch``."""

    def __init__(self, epoch: int):
        super().__init__(f"pruned after epoch {epoch}")
        self.epoch = epoch


@dataclass(frozen=True)
class Param:
    """One searched setting: a ``TrainConfig`` field and the values a trial draws it from.

    ``kind``: "int" (low..high by step), "float" (low..high by step), "log" (low..high on a log
    scale) or "choice" (one of ``choices``).
    """

    name: str
    kind: str
    low: float | None = None
    high: float | None = None
    step: float | None = None
    choices: tuple = ()

    def suggest(self, trial):
        if self.kind == "int":
            return trial.suggest_int(self.name, int(self.low), int(self.high), step=int(self.step or 1))
        if self.kind == "float":     # 0.15, not 0.15000000000000002, in the files
            return round(trial.suggest_float(self.name, self.low, self.high, step=self.step), 10)
        if self.kind == "log":
            return trial.suggest_float(self.name, self.low, self.high, log=True)
        return trial.suggest_categorical(self.name, list(self.choices))

    def contains(self, value) -> bool:
        """Whether ``value`` is one this parameter can draw (so it may be enqueued)."""
        if self.kind == "choice":
            return value in self.choices
        if isinstance(value, bool) or not isinstance(value, (int, float)):
            return False
        if not self.low - 1e-12 <= value <= self.high + 1e-12:
            return False
        if self.kind in ("int", "float") and self.step:
            k = (value - self.low) / self.step
            return math.isclose(k, round(k), abs_tol=1e-9)
        return True

    def describe(self) -> str:
        """'64–256 step 32', '1e-04–1e-02 (log)', 'mean, sum, …'."""
        if self.kind == "choice":
            return ", ".join(map(str, self.choices))
        if self.kind == "log":
            return f"{self.low:g}–{self.high:g} (log)"
        return f"{self.low:g}–{self.high:g} step {self.step:g}"


#: what a trial draws: ranges a chemist would try on a molecular property (chemprop's own
#: search runs depth 2–6 and dropout 0–0.4; wider hidden sizes than these cost more time than
#: the small property sets repay)
SPACE = (
    Param("hidden", "int", 64, 256, 32),
    Param("max_rounds", "int", 2, 8, 1),
    Param("lr", "log", 1e-4, 1e-2),
    Param("dropout", "float", 0.0, 0.4, 0.05),
    Param("aggregation", "choice", choices=AGGREGATIONS),
)
#: how the options of ``molpipe train`` spell the searched settings
OPTION = {"hidden": "hidden", "max_rounds": "rounds", "lr": "lr", "dropout": "dropout",
          "aggregation": "aggregation"}


def import_optuna():
    """Optuna, or an ImportError saying how to install it (the optional ``search`` extra)."""
    try:
        import optuna
    except ImportError:
        raise ImportError(f"molpipe hpopt needs Optuna: {INSTALL} (or pip install -e "
                          "'.[search]' in a clone)") from None
    return optuna


def default_pruner(epochs: int):
    """Optuna's median pruner: from the sixth trial on, a trial whose best validation error
    after epoch k (k past the first fifth of the epochs) is worse than the median of the
    earlier trials' at epoch k stops."""
    optuna = import_optuna()
    return optuna.pruners.MedianPruner(n_startup_trials=5, n_warmup_steps=max(epochs // 5, 1))


def val_error(kw: dict, task: str) -> float:
    """The validation error of one ``epoch`` event (lower is better).

    Regression: the validation RMSE (in the target's units) for one target, else the run's
    own selection score, the mean over targets of RMSE / SD; classification: 1 − the mean
    validation ROC-AUC (the run selects on the mean ROC-AUC). NaN without a score.
    """
    if task == "regression":
        rmse = [k for k in kw if k.startswith("val_") and k.endswith("_rmse")]
        if len(rmse) == 1:
            return float(kw[rmse[0]])
        return float(kw["val_score"])
    return 1.0 + float(kw["val_score"])


def metric_name(task: str, n_targets: int) -> str:
    if task == "classification":
        return "1 - ROC-AUC"
    return "RMSE" if n_targets == 1 else "RMSE / SD (mean over targets)"


def hpopt(base: TrainConfig, out_dir: str | Path, n_trials: int = 30,
          timeout: float | None = None, space: tuple[Param, ...] = SPACE, pruner=None,
          progress=None) -> dict:
    """Search ``space`` around ``base`` for ``n_trials`` trials (or until ``timeout`` seconds,
    after which no trial starts); write ``out_dir``'s files and return the summary.

    ``progress(event, **kw)``: "trial" (a trial starts: number, params), "epoch" (number,
    epoch, value, best), "warning" (message; a data warning, said by the first trial),
    "result" (a trial's record, as a row of trials.csv).
    """
    optuna = import_optuna()
    if n_trials < 1:
        raise HpoptError(f"--trials must be an integer of at least 1, not {n_trials}")
    if timeout is not None and not timeout > 0:
        raise HpoptError(f"--timeout must be a positive number of seconds, not {timeout}")
    names = [p.name for p in space]
    fields = {f.name for f in dataclasses.fields(TrainConfig)}
    if set(names) - fields:
        raise HpoptError(f"searched {sorted(set(names) - fields)[0]!r} is not a setting")
    out_dir = Path(out_dir)
    if (out_dir / TRIALS_CSV).exists():
        raise HpoptError(f"{out_dir} holds a search already ({TRIALS_CSV}); give another "
                         "--out")
    (out_dir / TRIALS_DIR).mkdir(parents=True, exist_ok=True)
    emit = progress or (lambda event, **kw: None)
    search = _Search(base, out_dir, space, emit)
    verbosity = optuna.logging.get_verbosity()
    optuna.logging.set_verbosity(optuna.logging.ERROR)    # every trial is told by `progress`
    study = optuna.create_study(direction="minimize",
                                sampler=optuna.samplers.TPESampler(seed=base.seed),
                                pruner=pruner or default_pruner(base.epochs))
    start = {p.name: getattr(base, p.name) for p in space if p.contains(getattr(base, p.name))}
    if start:
        study.enqueue_trial(start)
    t0, interrupted = time.perf_counter(), False
    try:
        study.optimize(search.objective, n_trials=n_trials, timeout=timeout,
                       catch=(Exception,))
    except KeyboardInterrupt:        # what finished is kept: the files say so
        interrupted = True
    finally:
        optuna.logging.set_verbosity(verbosity)
    summary = search.summary(time.perf_counter() - t0, interrupted, n_trials, timeout,
                             optuna.__version__, type(study.pruner).__name__)
    (out_dir / SUMMARY_JSON).write_text(json.dumps(summary, indent=2), encoding="utf-8")
    return summary


class _Search:
    """The trials' records and the files written after every trial."""

    def __init__(self, base: TrainConfig, out_dir: Path, space, emit):
        self.base, self.out_dir, self.space, self.emit = base, out_dir, space, emit
        self.records: list[dict] = []
        self.best: dict | None = None
        self.warned = False
        self.task, self.n_targets = "regression", 1

    def objective(self, trial) -> float:
        import optuna

        params = {p.name: p.suggest(trial) for p in self.space}
        run_dir = self.out_dir / TRIALS_DIR / f"trial-{trial.number:03d}"
        record = {"number": trial.number, "state": "running", **params, "best_val_error": None,
                  "epochs": 0, "seconds": 0.0, "run_dir": str(run_dir), "error": ""}
        self.emit("trial", number=trial.number, params=params)
        curve: list[float] = []
        t0 = time.perf_counter()

        def progress(event: str, **kw) -> None:
            if event == "warning" and not self.warned:
                self.emit("warning", message=kw["message"])
            elif event == "start":
                self.task = kw["task"]
                if kw["n_val"] == 0:
                    raise HpoptError(f"{self.base.data}: the split leaves no validation "
                                     "molecules to select on (--split)")
            elif event == "epoch":
                curve.append(val_error(kw, self.task))
                self.n_targets = max(1, sum(k.startswith("val_") and k.endswith("_rmse")
                                            for k in kw))
                best = _nanmin(curve)
                record["epochs"] = kw["epoch"]
                self.emit("epoch", number=trial.number, epoch=kw["epoch"], value=curve[-1],
                          best=best)
                if math.isfinite(best):
                    trial.report(best, kw["epoch"])
                    if trial.should_prune():
                        raise Pruned(kw["epoch"])

        try:
            config = _trial_config(self.base, params)
            report = train(config, run_dir, progress=progress)
            value = _nanmin(curve)
            if not math.isfinite(value):
                raise ValueError("no finite validation error in any epoch")
            record.update(state="complete", best_val_error=value, epochs=report["epochs"])
            if self.best is None or value < self.best["best_val_error"]:
                self.best = record
                _write_best(self.out_dir / BEST_TOML, config, record,
                            metric_name(self.task, self.n_targets))
            return value
        except Pruned:
            record.update(state="pruned", best_val_error=_finite_or_none(_nanmin(curve)))
            shutil.rmtree(run_dir, ignore_errors=True)      # its model is no one's best
            raise optuna.TrialPruned() from None
        except Exception as err:                # recorded, and the search goes on...
            record.update(state="failed", error=f"{type(err).__name__}: {err}",
                          best_val_error=_finite_or_none(_nanmin(curve)))
            if isinstance(err, (HpoptError, DataError)):   # ...unless every trial would fail
                trial.study.stop()
            raise
        finally:
            self.warned = True
            record["seconds"] = round(time.perf_counter() - t0, 2)
            if record["state"] == "running":    # interrupted (Ctrl-C): not a result
                record.update(state="interrupted")
            self.records.append(record)
            _write_trials(self.out_dir / TRIALS_CSV, self.records, self.space)
            self.emit("result", record=record)

    def summary(self, seconds: float, interrupted: bool, n_trials: int, timeout, version: str,
                pruner: str) -> dict:
        states = {s: sum(r["state"] == s for r in self.records)
                  for s in ("complete", "pruned", "failed", "interrupted")}
        base = self.base
        return {
            "dataset": base.data, "targets": base.targets, "task": self.task,
            "split": base.split, "seed": base.seed, "epochs": base.epochs,
            "metric": f"validation {metric_name(self.task, self.n_targets)}",
            "trials_asked": n_trials, "timeout_seconds": timeout, "trials": len(self.records),
            "states": states, "interrupted": interrupted, "wall_seconds": round(seconds, 2),
            "space": {p.name: p.describe() for p in self.space},
            "base": {p.name: getattr(base, p.name) for p in self.space},
            "base_trial": next((r for r in self.records if r["number"] == 0
                                and _is_base(r, base, self.space)), None),
            "best": self.best, "best_config": str(self.out_dir / BEST_TOML) if self.best else None,
            "sampler": f"TPESampler(seed={base.seed})", "pruner": pruner, "optuna": version,
        }


def _trial_config(base: TrainConfig, params: dict) -> TrainConfig:
    """``base`` with the drawn settings (min_rounds kept at most the drawn rounds)."""
    rounds = params.get("max_rounds", base.max_rounds)
    return dataclasses.replace(base, **params, min_rounds=min(base.min_rounds, rounds))


def _is_base(record: dict, base: TrainConfig, space) -> bool:
    return all(record[p.name] == getattr(base, p.name) for p in space)


def _write_trials(path: Path, records: list[dict], space) -> None:
    """trials.csv, rewritten whole after every trial (a temporary file, then a rename)."""
    columns = ["number", "state", *(p.name for p in space), "best_val_error", "epochs",
               "seconds", "run_dir", "error"]
    tmp = path.with_suffix(".csv.tmp")
    with open(tmp, "w", newline="", encoding="utf-8") as f:
        w = csv.DictWriter(f, fieldnames=columns, extrasaction="ignore")
        w.writeheader()
        for r in records:
            w.writerow({k: ("" if r.get(k) is None else r.get(k)) for k in columns})
    tmp.replace(path)


def _write_best(path: Path, config: TrainConfig, record: dict, metric: str) -> None:
    head = (f"# molpipe hpopt: the best trial so far, trial {record['number']} "
            f"(validation {metric} {record['best_val_error']:.4g}, {record['epochs']} epochs)\n")
    tmp = path.with_suffix(".toml.tmp")
    tmp.write_text(head + config.to_toml(), encoding="utf-8")
    tmp.replace(path)


def _nanmin(values: list[float]) -> float:
    kept = [v for v in values if math.isfinite(v)]
    return min(kept) if kept else float("nan")


def _finite_or_none(v: float):
    return v if math.isfinite(v) else None
