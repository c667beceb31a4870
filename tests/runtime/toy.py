"""A toy float64 network that follows the stage protocol: embed -> loop* -> [gate] -> head -> loss."""

from __future__ import annotations

import threading
import time
from dataclasses import dataclass, field

import numpy as np

from molpipe.runtime.stage import Stage

FIRST = "embed"


@dataclass(frozen=True, eq=False)
class ToyInst:
    """One toy instance: x (d_in,), target y, its own loop count, whether it is gated, and
    the atoms it stands for (admission and update criteria by atoms)."""

    x: np.ndarray
    y: float
    n_rounds: int
    gated: bool
    n_atoms: int = 1


def route(stage: str, step: int, inst: ToyInst):
    """embed -> loop (n_rounds times, maybe zero) -> gate (only gated) -> head -> loss."""
    after_loop = ("gate", 0) if inst.gated else ("head", 0)
    if stage == "embed":
        return ("loop", 0) if inst.n_rounds > 0 else after_loop
    if stage == "loop":
        return ("loop", step + 1) if step + 1 < inst.n_rounds else after_loop
    if stage == "gate":
        return ("head", 0)
    if stage == "head":
        return ("loss", 0)
    return None


class ToyStage(Stage):
    """Stage with test hooks: raise on ``fail_keys``, block on ``stall_keys`` until released."""

    def __init__(self, params, delay: float = 0.0):
        super().__init__(params)
        self.fail_keys: set = set()
        self.stall_keys: set = set()
        self.release = threading.Event()
        self.delay = delay   # seconds slept per call (sleep releases the GIL, like a kernel)

    def hook(self, key) -> None:
        if key in self.fail_keys:
            raise RuntimeError(f"toy failure at key {key!r}")
        if key in self.stall_keys:
            self.release.wait()
        if self.delay:
            time.sleep(self.delay)


class Embed(ToyStage):
    name = "embed"

    def forward(self, key, step, x, inst, train):
        self.hook(key)
        h = np.tanh(self.params["W"] @ inst.x + self.params["b"])
        if train:
            self.save(key, step, h)
        return {"h": h}

    def backward(self, key, step, dy, inst):
        h = self.pop(key, step)
        da = dy["h"] * (1.0 - h * h)
        self.grads["W"] += np.outer(da, inst.x)
        self.grads["b"] += da
        return {}


class Loop(ToyStage):
    name = "loop"

    def forward(self, key, step, x, inst, train):
        self.hook(key)
        h0 = x["h"]
        h = np.tanh(self.params["U"] @ h0 + self.params["c"])
        if train:
            self.save(key, step, (h0, h))
        return {"h": h}

    def backward(self, key, step, dy, inst):
        h0, h = self.pop(key, step)
        da = dy["h"] * (1.0 - h * h)
        self.grads["U"] += np.outer(da, h0)
        self.grads["c"] += da
        return {"h": self.params["U"].T @ da}


class Gate(ToyStage):
    name = "gate"

    def forward(self, key, step, x, inst, train):
        self.hook(key)
        h0 = x["h"]
        g = 1.0 / (1.0 + np.exp(-self.params["G"] @ h0))
        if train:
            self.save(key, step, (h0, g))
        return {"h": h0 * g}

    def backward(self, key, step, dy, inst):
        h0, g = self.pop(key, step)
        dz = dy["h"] * h0 * g * (1.0 - g)
        self.grads["G"] += np.outer(dz, h0)
        return {"h": dy["h"] * g + self.params["G"].T @ dz}


class Head(ToyStage):
    name = "head"

    def forward(self, key, step, x, inst, train):
        self.hook(key)
        h = x["h"]
        if train:
            self.save(key, step, h)
        return {"pred": np.array([self.params["w"] @ h + self.params["b"][0]])}

    def backward(self, key, step, dy, inst):
        h = self.pop(key, step)
        dp = dy["pred"][0]
        self.grads["w"] += dp * h
        self.grads["b"] += dp
        return {"h": dp * self.params["w"]}


class Loss(ToyStage):
    name = "loss"

    def forward(self, key, step, x, inst, train):
        self.hook(key)
        r = x["pred"] - inst.y
        if train:
            self.save(key, step, r)
        return {"loss": 0.5 * r * r, "pred": x["pred"]}

    def backward(self, key, step, dy, inst):
        return {"pred": self.pop(key, step)}


@dataclass
class SGD:
    """Plain SGD with the optimizer signature: ``step(grads, scale)`` updates in place."""

    params: dict
    lr: float = 0.1
    n_steps: int = 0
    scales: list = field(default_factory=list)

    def step(self, grads: dict, scale: float) -> None:
        for k, p in self.params.items():
            p -= self.lr * scale * grads[k]
        self.n_steps += 1
        self.scales.append(scale)


def make_net(seed: int = 0, d: int = 5, d_in: int = 3, lr: float = 0.1, delay: float = 0.0):
    """Stages and SGD optimizers of the toy network, initialised from ``seed``."""
    rng = np.random.default_rng(seed)
    n = lambda *s: rng.normal(scale=0.5, size=s)  # noqa: E731
    stages = {
        "embed": Embed({"W": n(d, d_in), "b": n(d)}, delay),
        "loop": Loop({"U": n(d, d), "c": n(d)}, delay),
        "gate": Gate({"G": n(d, d)}, delay),
        "head": Head({"w": n(d), "b": n(1)}, delay),
        "loss": Loss({}, delay),
    }
    return stages, {s: SGD(st.params, lr) for s, st in stages.items()}


def make_items(n: int, seed: int = 1, d_in: int = 3, eval_every: int = 0, atoms: int = 0):
    """``n`` (key, inst, train) items with 0-3 loop rounds, some gated, some evaluation;
    with ``atoms``, each standing for 1..atoms atoms (else one)."""
    rng = np.random.default_rng(seed)
    items = []
    for k in range(n):
        x = rng.normal(size=d_in)
        inst = ToyInst(x, float(np.sin(x.sum())), int(rng.integers(0, 4)), bool(rng.random() < 0.5),
                       int(rng.integers(1, atoms + 1)) if atoms else 1)
        items.append((k, inst, not (eval_every and k % eval_every == eval_every - 1)))
    return items


def reference(stages, optimizers, items, group: int = 1) -> dict:
    """Sequential trainer: forward the path, backward in reverse; step each group's mean.

    Every stage visited in a group of ``group`` training instances steps once with
    scale 1/(instances of the group that visited it). Returns per-key loss.
    """
    losses, visits = {}, {}
    train_items = [it for it in items if it[2]]
    for i, (key, inst, _) in enumerate(train_items):
        at, x, path = (FIRST, 0), {}, []
        while at is not None:
            x = stages[at[0]].forward(key, at[1], x, inst, True)
            path.append(at)
            at = route(at[0], at[1], inst)
        losses[key] = float(x["loss"][0])
        dy = {}
        for s, t in reversed(path):
            dy = stages[s].backward(key, t, dy, inst)
        for s in {s for s, _ in path}:
            visits[s] = visits.get(s, 0) + 1
        if (i + 1) % group == 0 or i + 1 == len(train_items):
            for s, n in visits.items():
                optimizers[s].step(stages[s].grads, 1.0 / n)
                stages[s].zero_grad()
            visits = {}
    return losses


def max_param_diff(a: dict, b: dict) -> float:
    """Largest absolute difference between the parameters of two toy networks."""
    return max(float(np.max(np.abs(a[s].params[k] - b[s].params[k])))
               for s in a for k in a[s].params)
