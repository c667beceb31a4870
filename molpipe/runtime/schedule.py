"""Schedules: when the control node may admit an instance and when every worker must update."""

from __future__ import annotations


class AsyncSchedule:
    """Admit whenever a slot is free; each worker updates on its own criterion."""

    name = "async"
    auto_update = True

    def can_admit(self, train: bool) -> bool:
        return True

    def admitted(self, train: bool) -> None:
        pass

    def completed(self, train: bool) -> bool:
        """Record a finished instance; True when every worker must update now."""
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

    def can_admit(self, train: bool) -> bool:
        return not train or self.n_admitted < self.size

    def admitted(self, train: bool) -> None:
        self.n_admitted += bool(train)

    def completed(self, train: bool) -> bool:
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


def make_schedule(name: str, max_active_keys: int, sync_group: int | None = None):
    """Schedule called ``name`` ("async" or "sync").

    The sync schedule updates after every ``sync_group`` training instances (default
    ``max_active_keys``: a group fills the pipeline once, then drains it).
    """
    if name == "async":
        return AsyncSchedule()
    if name == "sync":
        group = max_active_keys if sync_group is None else sync_group
        if group < 1:
            raise ValueError(f"sync group must be >= 1 instance, got {group}")
        return SyncSchedule(group)
    raise ValueError(f"unknown schedule {name!r} (expected 'async' or 'sync')")
