"""Loss stage: masked MSE on standardized targets, the Gaussian NLL of a mean-variance head, or
masked BCE on logits; holds target scaling and the additive baseline (``atom_ref``) that
regression targets are measured from."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.activations import sigmoid_fwd
from molpipe.kernels.loss import (gaussian_variance, masked_bce_bwd, masked_bce_fwd,
                                  masked_gaussian_nll_bwd, masked_gaussian_nll_fwd,
                                  masked_mse_bwd, masked_mse_fwd)
from molpipe.runtime.stage import Arrays, Stage

TASKS = ("regression", "classification")
#: regression losses: "mse" (Y is the mean) or "mve" (Y = [mean | raw variance], the Gaussian
#: negative log-likelihood: a mean-variance head that predicts its own uncertainty)
LOSSES = ("mse", "mve")


def outputs_per_target(loss: str) -> int:
    """Columns of Y per target: 1, or 2 for a mean-variance head (mean and raw variance)."""
    return 2 if loss == "mve" else 1


class LossStage(Stage):
    """No trainable parameters; ``buffers`` holds ``mean``, ``std``: (n_targets,) and
    ``atom_ref``: (d_v, n_targets), all fitted on the training split.

    Regression compares Y with ``T = (Y_true - b - mean) / std`` and predicts
    ``Y std + mean + b``, where ``b = sum over a molecule's atoms of V_a atom_ref`` is the
    additive baseline (zero when ``atom_ref`` is, molpipe.data.scaling.additive_baseline);
    with ``loss="mve"`` Y is (n_mols, 2 n_targets): the mean (scaled and shifted as above)
    then the raw variance ``s`` (``var = softplus(s) + 1e-6`` in standardized units, predicted
    as the SD ``sqrt(var) std`` in data units). Classification compares logits Y with 0/1
    targets and predicts ``sigmoid(Y)``.
    """

    name = "loss"

    def __init__(self, mean: np.ndarray, std: np.ndarray, task: str = "regression", dtype=np.float32,
                 atom_ref: np.ndarray | None = None, d_v: int = 0, loss: str = "mse"):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        if loss not in LOSSES:
            raise ValueError(f"loss must be one of {LOSSES}, got {loss!r}")
        if loss == "mve" and task != "regression":
            raise ValueError("loss 'mve' (a mean and a variance per target) is for regression; "
                             f"a {task} model trains on the cross-entropy of its logits")
        super().__init__({})
        self.task, self.loss = task, loss
        mean = np.array(mean, dtype=dtype).reshape(-1)
        if atom_ref is None:
            atom_ref = np.zeros((d_v, mean.size))
        self.buffers = {"mean": mean, "std": np.array(std, dtype=dtype).reshape(-1),
                        "atom_ref": np.array(atom_ref, dtype=dtype).reshape(-1, mean.size)}
        if np.any(self.buffers["std"] <= 0):
            raise ValueError("target std must be positive")

    def baseline(self, inst) -> np.ndarray | float:
        """(n_mols, n_targets) float64: each molecule's additive baseline (0. when there is none)."""
        ref = self.buffers["atom_ref"]
        if self.task != "regression" or not ref.any():
            return 0.0
        per_atom = inst.V.astype(np.float64) @ ref.astype(np.float64)
        out = np.zeros((inst.n_mols, ref.shape[1]))
        np.add.at(out, inst.atom_mol, per_atom)
        return out

    def targets(self, inst, dtype, base=0.0) -> np.ndarray:
        """Targets in the units of Y (standardized for regression); NaN where missing."""
        Y_true = inst.Y.astype(dtype)
        if self.task == "regression":
            return ((Y_true - base - self.buffers["mean"]) / self.buffers["std"]).astype(dtype)
        return Y_true

    def predictions(self, Y: np.ndarray, base=0.0) -> np.ndarray:
        """Y's means in data units (regression) or probabilities (classification)."""
        if self.task == "regression":
            M = Y[:, : self.buffers["mean"].size]
            return (M * self.buffers["std"] + self.buffers["mean"] + base).astype(Y.dtype)
        return sigmoid_fwd(Y)

    def spread(self, Y: np.ndarray) -> np.ndarray | None:
        """The predicted SD (n_mols, n_targets) in data units of a mean-variance head, else None."""
        if self.loss != "mve":
            return None
        S = np.ascontiguousarray(Y[:, self.buffers["mean"].size:])
        return (np.sqrt(gaussian_variance(S)) * self.buffers["std"]).astype(Y.dtype)

    def _kernels(self):
        if self.task == "classification":
            return masked_bce_fwd, masked_bce_bwd
        if self.loss == "mve":
            return masked_gaussian_nll_fwd, masked_gaussian_nll_bwd
        return masked_mse_fwd, masked_mse_bwd

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        Y = np.ascontiguousarray(x["Y"])
        base = self.baseline(inst)
        T = self.targets(inst, Y.dtype, base)
        fwd, _ = self._kernels()
        loss = np.array([fwd(Y, T)], dtype=Y.dtype)
        if train:
            self.save(key, step, (Y, T))
        out = {"loss": loss, "pred": self.predictions(Y, base)}
        if self.loss == "mve":
            out["std"] = self.spread(Y)
        return out

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        Y, T = self.pop(key, step)
        _, bwd = self._kernels()
        dloss = float(dy["loss"][0]) if "loss" in dy else 1.0
        return {"Y": bwd(Y, T, dloss)}
