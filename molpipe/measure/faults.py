"""Fault injection for tests and benchmarks: make one stage raise, emit NaN or stall.

    fault = inject(network.stages["update"], "nan")
    fault.arm(at=5)          # the 6th training forward of that stage from now on
    ...                      # run: the fault fires once, on whatever instance comes then
    fault.fired              # [(key, rows of the instance)]

``inject`` replaces the bound ``forward`` (or, with ``direction="backward"``, ``backward``:
a NaN/inf then lands in the input gradient) of one stage object (the worker calls whatever
``stage.forward`` is); nothing else in molpipe knows about faults.
"""

from __future__ import annotations

import copy
import threading
import time

import numpy as np

KINDS = ("raise", "nan", "inf", "stall")


class InjectedFault(RuntimeError):
    """The exception an armed ``raise`` fault throws."""


class Fault:
    """A fault waiting in one stage's forward; fires on its ``at``-th training call once armed."""

    def __init__(self, stage, kind: str, stall_seconds: float = 30.0, times: int = 1):
        if kind not in KINDS:
            raise ValueError(f"fault kind must be one of {KINDS}, got {kind!r}")
        self.stage, self.kind = stage, kind
        self.stall_seconds = stall_seconds   # a stall ends by itself after this, or on release()
        self.times = times                   # how many calls fire, one after another
        self.fired: list[tuple] = []         # (key, rows) of every instance hit
        self._countdown: int | None = None
        self._released = threading.Event()
        self._lock = threading.Lock()
        self._forward = stage.forward
        self._backward = stage.backward

    def for_stage(self, stage) -> "Fault":
        """The same fault in a replica's twin of the stage (``Stage.replica``): it wraps the
        twin's own forward and backward and shares this fault's countdown and ``fired``."""
        twin = copy.copy(self)
        twin.stage = stage
        twin._forward = type(stage).forward.__get__(stage)
        twin._backward = type(stage).backward.__get__(stage)
        twin._fires = self._fires
        return twin

    def arm(self, at: int = 0) -> "Fault":
        """Fire on the ``at``-th training forward (0-based) from now on."""
        with self._lock:
            self._countdown = at
        return self

    def release(self) -> None:
        """End a stall now."""
        self._released.set()

    def remove(self) -> None:
        """Put the stage's own forward and backward back."""
        self.stage.forward, self.stage.backward = self._forward, self._backward

    def _fires(self, train: bool) -> bool:
        with self._lock:
            if not train or self._countdown is None:
                return False
            if self._countdown > 0:
                self._countdown -= 1
                return False
            fire = len(self.fired) < self.times
            if len(self.fired) + 1 >= self.times:
                self._countdown = None
            return fire

    def backward(self, key, step: int, dy: dict, inst) -> dict:
        """The stage's backward, its input gradient poisoned when the fault fires."""
        fire = self._fires(True)
        if fire:
            self.fired.append((key, np.asarray(getattr(inst, "rows", ()))))
        dx = self._backward(key, step, dy, inst)
        return self._poison(dx) if fire else dx

    def _poison(self, y: dict) -> dict:
        """``y`` with its first float array all NaN (or inf)."""
        self.stage.nonfinite = None     # what the kernels counted no longer holds
        y = dict(y)
        name = next(k for k, v in y.items() if isinstance(v, np.ndarray) and v.dtype.kind == "f")
        y[name] = np.full_like(y[name], np.nan if self.kind == "nan" else np.inf)
        return y

    def __call__(self, key, step: int, x: dict, inst, train: bool) -> dict:
        fire = self._fires(train)
        if fire:
            self.fired.append((key, np.asarray(getattr(inst, "rows", ()))))
            if self.kind == "raise":
                raise InjectedFault(f"injected fault in stage {self.stage.name!r} at key {key!r}")
            if self.kind == "stall":
                self._released.wait(self.stall_seconds)
        y = self._forward(key, step, x, inst, train)
        return self._poison(y) if fire and self.kind in ("nan", "inf") else y


def inject(stage, kind: str, direction: str = "forward", **kw) -> Fault:
    """Install a (disarmed) ``kind`` fault into ``stage.forward`` (or ``stage.backward``:
    kinds nan and inf only); returns it."""
    if direction not in ("forward", "backward"):
        raise ValueError(f"fault direction must be forward or backward, got {direction!r}")
    if direction == "backward" and kind not in ("nan", "inf"):
        raise ValueError(f"a backward fault is nan or inf, got {kind!r}")
    fault = Fault(stage, kind, **kw)
    if direction == "backward":
        stage.backward = fault.backward
    else:
        stage.forward = fault
    return fault


def wait_for(predicate, timeout: float, poll: float = 0.005) -> bool:
    """Poll ``predicate`` until it holds (True) or ``timeout`` seconds pass (False)."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(poll)
    return bool(predicate())


# -- killed runs -------------------------------------------------------------------------
class CorruptRun(AssertionError):
    """A run directory a kill must never leave: model/ that does not load, or a damaged
    newest checkpoint with no older valid one."""


def train_code(out_dir: str, resume: bool = False, **config) -> str:
    """``python -c`` source that trains ``TrainConfig(**config)`` into ``out_dir`` (or resumes)."""
    if resume:
        return (f"from molpipe.training.settings import TrainConfig; from molpipe.training.train import train; "
                f"train(TrainConfig(), {str(out_dir)!r}, resume=True)")
    return (f"from molpipe.training.settings import TrainConfig; from molpipe.training.train import train; "
            f"train(TrainConfig(**{config!r}), {str(out_dir)!r})")


def inspect_run_dir(out_dir) -> dict:
    """What a (killed) run directory holds; CorruptRun when it is unusable.

    Returns ``checkpoint`` (newest valid epoch or None), ``model`` ("loads" | "absent"),
    ``phase`` (where the kill landed, from leftovers: "checkpoint write", "model write",
    "finished", "training") and ``leftovers`` (unfinished .tmp/.old directories).
    """
    from pathlib import Path

    from molpipe.io.checkpoint import CheckpointError, load_checkpoint
    from molpipe.io.model import ModelError, load_model

    out = Path(out_dir)
    ckpt_dir = out / "checkpoints"
    tmp = sorted(p.name for p in ckpt_dir.glob("*.tmp")) if ckpt_dir.exists() else []
    model_left = sorted(p.name for p in out.glob("model.*"))
    try:
        epoch = load_checkpoint(out)[0]["epoch"]
    except CheckpointError as e:
        if "no checkpoint" not in str(e):
            raise CorruptRun(str(e)) from None
        epoch = None
    if (out / "model").exists():
        try:
            load_model(out / "model")
        except ModelError as e:
            raise CorruptRun(f"model/ does not load: {e}") from None
        model = "loads"
    else:
        model = "absent"
    phase = ("checkpoint write" if tmp else "model write" if model_left
             else "finished" if (out / "report.json").exists() else "training")
    return {"checkpoint": epoch, "model": model, "phase": phase, "leftovers": tmp + model_left}
