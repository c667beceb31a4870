"""Optimizers over ONE stage's parameters (Adam); updates run in numba kernels.

Adam can also keep an exponential moving average of its stage's parameters (``average``:
the decay per update, 0 = off): every worker averages its own parameters as it updates them,
no barrier, and evaluation swaps the averages in (``averaged_weights``).
"""

from __future__ import annotations

from contextlib import contextmanager

import numpy as np

from molpipe.kernels.optim import adam_step, average_step
from molpipe.nn.layout import from_old_layout


def _flat(a: np.ndarray) -> np.ndarray:
    """1-d view of a contiguous array (the kernels update through it in place)."""
    if not a.flags.c_contiguous:
        raise ValueError("optimizer arrays must be C-contiguous")
    return a.reshape(-1)


class _Optimizer:
    """Shared state handling: ``params`` dict, per-parameter slots, ``lr``."""

    slots: tuple[str, ...] = ()
    scalars: tuple[str, ...] = ("lr",)
    #: scalars a state dict written before they existed lacks, and what it meant
    optional_scalars: dict = {}
    #: slots such a state dict lacks that start from the parameters themselves
    parameter_slots: tuple[str, ...] = ()

    def __init__(self, params: dict[str, np.ndarray], lr: float):
        self.params = params
        self.lr = float(lr)
        self.state = {s: {k: np.zeros_like(p) for k, p in params.items()} for s in self.slots}

    def state_dict(self) -> dict:
        """Scalars plus slot arrays keyed "slot.param" (copies)."""
        out: dict = {s: getattr(self, s) for s in self.scalars}
        for s, arrays in self.state.items():
            for k, a in arrays.items():
                out[f"{s}.{k}"] = a.copy()
        return out

    def load_state_dict(self, d: dict) -> None:
        """Scalars and slots from ``state_dict``; a W_m slot saved in W_m's old
        (d_h, n_types d_h) layout is converted (``from_old_layout``)."""
        for s in self.scalars:
            value = d[s] if s in d else self.optional_scalars[s]
            setattr(self, s, type(getattr(self, s))(np.asarray(value).item()))
        self._after_scalars()
        for s, arrays in self.state.items():
            for k, a in arrays.items():
                if f"{s}.{k}" not in d and s in self.parameter_slots:
                    a[...] = self.params[k]
                    continue
                src = from_old_layout(f"{s}.{k}", d[f"{s}.{k}"], a.shape)
                if src.shape != a.shape:
                    raise ValueError(f"{s}.{k}: shape {src.shape}, expected {a.shape}")
                a[...] = src


    def _after_scalars(self) -> None:
        """Hook: the scalars were loaded (a slot may now be needed)."""


class Adam(_Optimizer):
    """Adam (L2 weight decay added to the gradient, as in torch.optim.Adam), optionally with
    a moving average of the parameters: slot ``avg``, ``avg = b avg + (1 - b) p`` after every
    step with ``b = min(average, (1 + t) / (10 + t))`` (short memory while t is small)."""

    slots = ("m", "v")
    scalars = ("lr", "t", "beta1", "beta2", "eps", "weight_decay", "average")
    optional_scalars = {"average": 0.0}
    parameter_slots = ("avg",)

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0, average: float = 0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.t = 0
        self.average = float(average)
        self._after_scalars()

    def _after_scalars(self) -> None:
        if self.average > 0 and "avg" not in self.state:
            self.state["avg"] = {k: p.copy() for k, p in self.params.items()}

    def step(self, grads: dict[str, np.ndarray], scale: float = 1.0) -> None:
        """Update every parameter in place with ``grads * scale`` (then its average)."""
        self.t += 1
        m, v = self.state["m"], self.state["v"]
        for k, p in self.params.items():
            adam_step(_flat(p), _flat(grads[k]), _flat(m[k]), _flat(v[k]), self.lr, self.beta1,
                      self.beta2, self.eps, self.weight_decay, float(scale), self.t)
        if self.average > 0:
            beta = min(self.average, (1.0 + self.t) / (10.0 + self.t))
            for k, p in self.params.items():
                average_step(_flat(self.state["avg"][k]), _flat(p), beta)


    def direction(self) -> dict[str, np.ndarray] | None:
        """The step an update would take now, per unit of ``lr``: ``m_hat / (sqrt(v_hat) +
        eps)`` (bias-corrected; None before the first step). Weight prediction extrapolates
        along it: ``p - lr * s * direction``."""
        if self.t == 0:
            return None
        c1, c2 = 1.0 / (1.0 - self.beta1 ** self.t), 1.0 / (1.0 - self.beta2 ** self.t)
        m, v = self.state["m"], self.state["v"]
        return {k: (m[k] * c1) / (np.sqrt(v[k] * c2) + self.eps) for k in self.params}


class Frozen(_Optimizer):
    """The optimizer of a frozen stage (``--freeze``): it holds nothing and never updates,
    so the stage's parameters stay as they were (also when an MPI rank rebuilds it)."""

    def __init__(self, params=None, lr: float = 0.0):
        super().__init__({}, lr)

    def step(self, grads: dict[str, np.ndarray], scale: float = 1.0) -> None:
        """Nothing: the gradient computed for a frozen stage is dropped."""


@contextmanager
def averaged_weights(stages: dict, optimizers: dict):
    """Within the block every stage whose optimizer averages holds its averaged parameters
    (copied in place, so every reference to the arrays sees them); the live ones after."""
    live = {}
    for name, opt in optimizers.items():
        avg = getattr(opt, "state", {}).get("avg")
        if avg:
            params = stages[name].params
            live[name] = {k: p.copy() for k, p in params.items()}
            for k, p in params.items():
                p[...] = avg[k]
    try:
        yield
    finally:
        for name, saved in live.items():
            for k, p in stages[name].params.items():
                p[...] = saved[k]
