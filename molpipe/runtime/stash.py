"""Weight stashing (PipeDream): an instance's backward sees the weights its forward used.

Under the async schedule a stage may update between an instance's forward and its
backward; without stashing the backward computes the input gradient with newer weights
than produced the activations. With stashing, a stage keeps a copy of a parameter version
for as long as some in-flight instance went forward through it, and swaps it in for that
instance's backward (the update itself still applies to the live weights).
"""

from __future__ import annotations

from contextlib import contextmanager
from typing import Any


def release(refs: dict, copies: dict, tag) -> None:
    """One in-flight forward of ``tag`` went backward: drop its count, and its copy of the
    parameters once no forward of that version is left."""
    left = refs.get(tag, 1) - 1
    if left > 0:
        refs[tag] = left
    else:
        refs.pop(tag, None)
        copies.pop(tag, None)


class WeightStash:
    """Parameter versions of one stage, reference-counted by in-flight (key, step)."""

    def __init__(self, stage):
        self.stage = stage
        self.at: dict[tuple[Any, int], int] = {}     # (key, step) -> version seen in forward
        self.refs: dict[int, int] = {}               # version -> in-flight forwards using it
        self.copies: dict[int, dict] = {}            # version -> params as they were

    def forward(self, key, step: int, version: int) -> None:
        """Record that ``(key, step)`` went forward with parameter ``version``."""
        self.at[(key, step)] = version
        self.refs[version] = self.refs.get(version, 0) + 1

    def before_update(self, version: int) -> None:
        """Copy the live parameters if an in-flight instance still needs ``version``."""
        if self.refs.get(version):
            self.copies[version] = {k: p.copy() for k, p in self.stage.params.items()}

    @contextmanager
    def backward(self, key, step: int, current: int):
        """Within the block the stage's ``params`` are the version ``(key, step)`` saw."""
        version = self.at.pop((key, step), current)
        live = self.stage.params
        if version != current:
            self.stage.params = self.copies[version]
        try:
            yield
        finally:
            self.stage.params = live
            release(self.refs, self.copies, version)

    @property
    def n_versions(self) -> int:
        """Stashed copies held now (zero when nothing is in flight)."""
        return len(self.copies)


class PredictedWeights:
    """Weight prediction (SpecTrain, PipeMare) for one stage: a training forward runs on the
    weights the stage is expected to hold when the instance's backward comes back,

        W_pred = W - lr * s * D

    with ``s`` the updates expected meanwhile and ``D`` the optimizer's current step
    direction (``optimizer.direction()``; Adam: m_hat / (sqrt(v_hat) + eps)). ``s = 0``, an
    optimizer without a direction, or a stage without parameters is the plain forward.

    It composes with stashing: with ``stash`` the backward uses exactly the weights its
    forward used (the predicted ones, or the stashed version when ``s`` was 0), without it
    the live ones (PipeMare's forward-only prediction). Predicted copies are shared by
    every forward of one (version, s) and dropped when the last of them went backward.
    """

    def __init__(self, stage, optimizer, stash: bool = True):
        self.stage, self.optimizer, self.stash = stage, optimizer, stash
        self.at: dict[tuple[Any, int], tuple[int, int]] = {}  # (key, step) -> (version, s)
        self.refs: dict[tuple[int, int], int] = {}            # (version, s) -> forwards
        self.copies: dict[tuple[int, int], dict] = {}         # (version, s) -> params

    def _direction(self, s: int):
        fn = getattr(self.optimizer, "direction", None)
        return fn() if s > 0 and fn is not None and self.stage.params else None

    @contextmanager
    def forward(self, key, step: int, version: int, s: int):
        """Within the block the stage's ``params`` are the prediction ``s`` updates ahead."""
        direction = self._direction(s)
        tag = (version, s if direction is not None else 0)
        if tag[1] and tag not in self.copies:
            lr_s = float(self.optimizer.lr) * tag[1]
            self.copies[tag] = {k: p - lr_s * direction[k] for k, p in self.stage.params.items()}
        self.at[(key, step)] = tag
        self.refs[tag] = self.refs.get(tag, 0) + 1
        live = self.stage.params
        if tag[1]:
            self.stage.params = self.copies[tag]
        try:
            yield
        finally:
            self.stage.params = live

    def before_update(self, version: int) -> None:
        """Stash the live parameters if a backward still needs unpredicted ``version``."""
        if self.stash and self.refs.get((version, 0)):
            self.copies[(version, 0)] = {k: p.copy() for k, p in self.stage.params.items()}

    @contextmanager
    def backward(self, key, step: int, current: int):
        """Within the block ``params`` are the forward's (``stash``) or the live ones."""
        tag = self.at.pop((key, step), (current, 0))
        live = self.stage.params
        if self.stash and tag != (current, 0):
            self.stage.params = self.copies[tag]
        try:
            yield
        finally:
            self.stage.params = live
            release(self.refs, self.copies, tag)

    @property
    def n_versions(self) -> int:
        """Stashed and predicted copies held now (zero when nothing is in flight)."""
        return len(self.copies)
