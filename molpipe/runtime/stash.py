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
            left = self.refs.get(version, 1) - 1
            if left > 0:
                self.refs[version] = left
            else:
                self.refs.pop(version, None)
                self.copies.pop(version, None)

    @property
    def n_versions(self) -> int:
        """Stashed copies held now (zero when nothing is in flight)."""
        return len(self.copies)
