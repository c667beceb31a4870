"""Loss stage: masked MSE on standardized targets or masked BCE on logits; holds target scaling."""

from __future__ import annotations

import numpy as np

from molpipe.kernels.activations import sigmoid_fwd
from molpipe.kernels.loss import masked_bce_bwd, masked_bce_fwd, masked_mse_bwd, masked_mse_fwd
from molpipe.nn.stage import Arrays, Stage

TASKS = ("regression", "classification")


class LossStage(Stage):
    """No trainable parameters; ``buffers`` holds ``mean``, ``std``: (n_targets,) of the training split.

    Regression compares Y with ``T = (Y_true - mean) / std`` and predicts ``Y std + mean``;
    classification compares logits Y with 0/1 targets and predicts ``sigmoid(Y)``.
    """

    name = "loss"

    def __init__(self, mean: np.ndarray, std: np.ndarray, task: str = "regression", dtype=np.float32):
        if task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {task!r}")
        super().__init__({})
        self.task = task
        self.buffers = {"mean": np.array(mean, dtype=dtype).reshape(-1),
                        "std": np.array(std, dtype=dtype).reshape(-1)}
        if np.any(self.buffers["std"] <= 0):
            raise ValueError("target std must be positive")

    def targets(self, inst, dtype) -> np.ndarray:
        """Targets in the units of Y (standardized for regression); NaN where missing."""
        Y_true = inst.Y.astype(dtype)
        if self.task == "regression":
            return (Y_true - self.buffers["mean"]) / self.buffers["std"]
        return Y_true

    def predictions(self, Y: np.ndarray) -> np.ndarray:
        """Y in data units (regression) or probabilities (classification)."""
        if self.task == "regression":
            return Y * self.buffers["std"] + self.buffers["mean"]
        return sigmoid_fwd(Y)

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        Y = np.ascontiguousarray(x["Y"])
        T = self.targets(inst, Y.dtype)
        fwd = masked_mse_fwd if self.task == "regression" else masked_bce_fwd
        loss = np.array([fwd(Y, T)], dtype=Y.dtype)
        if train:
            self.save(key, step, (Y, T))
        return {"loss": loss, "pred": self.predictions(Y)}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        Y, T = self.pop(key, step)
        bwd = masked_mse_bwd if self.task == "regression" else masked_bce_bwd
        dloss = float(dy["loss"][0]) if "loss" in dy else 1.0
        return {"Y": bwd(Y, T, dloss)}
