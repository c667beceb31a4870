"""Schedules: when the control node may admit an instance and when every worker must update."""

from __future__ import annotations


class AsyncSchedule:
    """Admit whenever a slot is free; each worker updates on its own criterion.

    With ``max_atoms`` (admission by atoms) a new instance also waits until the atoms in
    flight plus its own fit in ``max_atoms``; with nothing in flight it is always admitted
    (an instance larger than the budget still runs, alone).
    """

    name = "async"
    auto_update = True

    def __init__(self, max_atoms: int | None = None):
        if max_atoms is not None and max_atoms < 1:
            raise ValueError(f"admission atoms budget must be >= 1, got {max_atoms}")
        self.max_atoms = max_atoms
        self.atoms = 0          # atoms of the instances in flight
        self.n = 0              # instances in flight

    def can_admit(self, train: bool, atoms: int = 1) -> bool:
        return self.max_atoms is None or self.n == 0 or self.atoms + atoms <= self.max_atoms

    def admitted(self, train: bool, atoms: int = 1) -> None:
        self.n += 1
        self.atoms += atoms

    def completed(self, train: bool, atoms: int = 1) -> bool:
        """Record a finished instance; True when every worker must update now."""
        self.n -= 1
        self.atoms -= atoms
        return False

    def flush(self) -> bool:
        """At the end of a run: True when a partial group is left to apply."""
        return False


class SyncSchedule:
    """The synchronous baseline: groups of ``size`` training instances, then one update.

    No training instance of the next group is admitted until the whole group has
    completed its backward and every worker has applied the group's mean gradient, so no
    gradient is ever stale. Evaluation instances are admitted freely (they change nothing).
    """

    name = "sync"
    auto_update = False

    def __init__(self, size: int):
        self.size = size
        self.n_admitted = 0   # training instances of the current group admitted so far
        self.n_completed = 0  # ... and completed

    def can_admit(self, train: bool, atoms: int = 1) -> bool:
        return not train or self.n_admitted < self.size

    def admitted(self, train: bool, atoms: int = 1) -> None:
        self.n_admitted += bool(train)

    def completed(self, train: bool, atoms: int = 1) -> bool:
        if not train:
            return False
        self.n_completed += 1
        if self.n_completed == self.size:
            self.n_admitted = self.n_completed = 0
            return True
        return False

    def flush(self) -> bool:
        done = self.n_completed > 0
        self.n_admitted = self.n_completed = 0
        return done


ADMISSIONS = "instances or atoms:N"


def parse_admission(text: str) -> int | None:
    """The atoms budget of an admission text form: ``instances`` (None: only
    max_active_keys counts) or ``atoms:N``; ValueError listing them."""
    name, *args = str(text).strip().lower().split(":")
    if name == "instances" and not args:
        return None
    if name == "atoms" and len(args) == 1 and args[0].isdigit() and int(args[0]) >= 1:
        return int(args[0])
    raise ValueError(f"admission must be {ADMISSIONS}, not {text!r}")


def make_schedule(name: str, max_active_keys: int, sync_group: int | None = None,
                  max_atoms: int | None = None):
    """Schedule called ``name`` ("async" or "sync").

    The sync schedule updates after every ``sync_group`` training instances (default
    ``max_active_keys``: a group fills the pipeline once, then drains it). ``max_atoms``:
    async admission by atoms in flight (``AsyncSchedule``).
    """
    if name == "async":
        return AsyncSchedule(max_atoms)
    if max_atoms is not None:
        raise ValueError("admission by atoms is for the async schedule")
    if name == "sync":
        group = max_active_keys if sync_group is None else sync_group
        if group < 1:
            raise ValueError(f"sync group must be >= 1 instance, got {group}")
        return SyncSchedule(group)
    raise ValueError(f"unknown schedule {name!r} (expected 'async' or 'sync')")
