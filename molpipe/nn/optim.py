"""Optimizers over ONE stage's parameters (Adam, SGD); updates run in numba kernels."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.optim import adam_step, sgd_step
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
            setattr(self, s, type(getattr(self, s))(np.asarray(d[s]).item()))
        for s, arrays in self.state.items():
            for k, a in arrays.items():
                src = from_old_layout(f"{s}.{k}", d[f"{s}.{k}"], a.shape)
                if src.shape != a.shape:
                    raise ValueError(f"{s}.{k}: shape {src.shape}, expected {a.shape}")
                a[...] = src


class Adam(_Optimizer):
    """Adam (L2 weight decay added to the gradient, as in torch.optim.Adam)."""

    slots = ("m", "v")
    scalars = ("lr", "t", "beta1", "beta2", "eps", "weight_decay")

    def __init__(self, params, lr: float = 1e-3, betas=(0.9, 0.999), eps: float = 1e-8,
                 weight_decay: float = 0.0):
        super().__init__(params, lr)
        self.beta1, self.beta2 = float(betas[0]), float(betas[1])
        self.eps = float(eps)
        self.weight_decay = float(weight_decay)
        self.t = 0

    def step(self, grads: dict[str, np.ndarray], scale: float = 1.0) -> None:
        """Update every parameter in place with ``grads * scale``."""
        self.t += 1
        m, v = self.state["m"], self.state["v"]
        for k, p in self.params.items():
            adam_step(_flat(p), _flat(grads[k]), _flat(m[k]), _flat(v[k]), self.lr, self.beta1,
                      self.beta2, self.eps, self.weight_decay, float(scale), self.t)


class SGD(_Optimizer):
    """SGD with optional heavy-ball momentum."""

    slots = ("buf",)
    scalars = ("lr", "momentum")

    def __init__(self, params, lr: float, momentum: float = 0.0):
        super().__init__(params, lr)
        self.momentum = float(momentum)

    def step(self, grads: dict[str, np.ndarray], scale: float = 1.0) -> None:
        """Update every parameter in place with ``grads * scale``."""
        buf = self.state["buf"]
        for k, p in self.params.items():
            sgd_step(_flat(p), _flat(grads[k]), _flat(buf[k]), self.lr, self.momentum, float(scale))
