"""Gradient accumulators and the criteria that tell a worker when to step its optimizer."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Protocol


class Criterion(Protocol):
    """A rule deciding from an accumulator's state whether its stage should update now."""

    def __call__(self, acc: "Accumulator") -> bool: ...


@dataclass(frozen=True)
class EveryN:
    """Update once ``n`` instance-gradients are gathered (``min_update_frequency``)."""

    n: int = 1

    def __post_init__(self):
        if self.n < 1:
            raise ValueError(f"min_update_frequency must be >= 1, got {self.n}")

    def __call__(self, acc: "Accumulator") -> bool:
        return acc.n >= self.n


@dataclass(frozen=True)
class CountOrStale:
    """Update at ``n`` gradients, or at once when a gathered gradient is ``staleness`` old.

    Staleness of a gradient: updates of the stage between the instance's forward and its
    backward (0 when nothing changed in between).
    """

    n: int
    staleness: int

    def __call__(self, acc: "Accumulator") -> bool:
        return acc.n >= self.n or acc.max_staleness >= self.staleness


class Never:
    """Never update on its own (the sync schedule: the control node sends updates)."""

    def __call__(self, acc: "Accumulator") -> bool:
        return False


@dataclass
class Accumulator:
    """What one stage gathered since its last update (the gradients live in ``stage.grads``).

    Fields
    ------
    criterion : Criterion      when to update
    n : int                    instance-gradients gathered (one per instance per stage)
    max_staleness : int        largest staleness among them
    version : int              updates applied so far
    """

    criterion: Criterion
    n: int = 0
    max_staleness: int = 0
    version: int = 0

    def add(self, staleness: int = 0) -> None:
        """Count one more instance whose gradient was added to the stage's ``grads``."""
        self.n += 1
        self.max_staleness = max(self.max_staleness, staleness)

    def ready(self) -> bool:
        """Whether the stage should step now (never with nothing gathered)."""
        return self.n > 0 and bool(self.criterion(self))

    def reset(self) -> None:
        """Forget what was gathered after an update; bump the version."""
        self.n = 0
        self.max_staleness = 0
        self.version += 1
