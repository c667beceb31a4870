"""Gradient accumulators and the criteria that tell a worker when to step its optimizer."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Callable, Protocol

import numpy as np


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


@dataclass(frozen=True)
class Atoms:
    """Update once the gathered instances hold ``n_atoms`` atoms (an instance without an
    atom count weighs one)."""

    n_atoms: int

    def __post_init__(self):
        if self.n_atoms < 1:
            raise ValueError(f"atoms criterion needs n_atoms >= 1, got {self.n_atoms}")

    def __call__(self, acc: "Accumulator") -> bool:
        return acc.atoms >= self.n_atoms


@dataclass(frozen=True)
class GradNorm:
    """Update once the L2 norm of the mean gathered gradient reaches ``threshold``, or at
    ``max_n`` gradients whatever the norm (small gradients still get applied)."""

    threshold: float
    max_n: int = 16

    def __post_init__(self):
        if not self.threshold > 0 or self.max_n < 1:
            raise ValueError(f"gradnorm needs threshold > 0 and max_n >= 1, got {self}")

    def __call__(self, acc: "Accumulator") -> bool:
        return acc.n >= self.max_n or acc.grad_norm() >= self.threshold


@dataclass(frozen=True)
class Backlog:
    """Update when the worker has no message waiting (nothing else to do), or at ``max_n``
    gradients."""

    max_n: int

    def __post_init__(self):
        if self.max_n < 1:
            raise ValueError(f"backlog criterion needs max_n >= 1, got {self.max_n}")

    def __call__(self, acc: "Accumulator") -> bool:
        return acc.n >= self.max_n or acc.backlog() == 0


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
    atoms : int                atoms of those instances
    max_staleness : int        largest staleness among them
    version : int              updates applied so far
    grads : () -> dict | None  the stage's gradient sums (for ``grad_norm``), set by the worker
    pending : () -> int        messages waiting for the worker (for ``backlog``), set by it
    """

    criterion: Criterion
    n: int = 0
    atoms: int = 0
    max_staleness: int = 0
    version: int = 0
    grads: Callable[[], dict] | None = field(default=None, repr=False)
    pending: Callable[[], int] = field(default=lambda: 0, repr=False)

    def add(self, staleness: int = 0, atoms: int = 1) -> None:
        """Count one more instance (of ``atoms`` atoms) whose gradient was added to the
        stage's ``grads``."""
        self.n += 1
        self.atoms += atoms
        self.max_staleness = max(self.max_staleness, staleness)

    def grad_norm(self) -> float:
        """L2 norm of the mean gathered gradient (0 without ``grads``): one BLAS dot per array."""
        if self.grads is None or self.n == 0:
            return 0.0
        sq = sum(float(np.dot(g.reshape(-1), g.reshape(-1))) for g in self.grads().values())
        return sq ** 0.5 / self.n

    def backlog(self) -> int:
        """Messages waiting for the worker now."""
        return int(self.pending())

    def ready(self) -> bool:
        """Whether the stage should step now (never with nothing gathered)."""
        return self.n > 0 and bool(self.criterion(self))

    def reset(self) -> None:
        """Forget what was gathered after an update; bump the version."""
        self.n = self.atoms = 0
        self.max_staleness = 0
        self.version += 1


CRITERIA = "count, atoms:N, gradnorm:X[:MAXN] or backlog:MAXN"


def parse_criterion(text: str, min_update_frequency: int = 1) -> Criterion:
    """The criterion a text form names: ``count`` (EveryN(min_update_frequency)),
    ``atoms:N``, ``gradnorm:X[:MAXN]`` or ``backlog:MAXN``; ValueError listing them."""
    name, *args = str(text).strip().lower().split(":")
    try:
        if name == "count" and not args:
            return EveryN(min_update_frequency)
        if name == "atoms" and len(args) == 1:
            return Atoms(int(args[0]))
        if name == "gradnorm" and len(args) in (1, 2):
            return GradNorm(float(args[0]), *(int(a) for a in args[1:]))
        if name == "backlog" and len(args) == 1:
            return Backlog(int(args[0]))
    except ValueError:
        pass
    raise ValueError(f"update criterion must be {CRITERIA}, not {text!r}")
