"""What an engine returns for one pass over instances (every engine, every schedule)."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass
class EpochResult:
    """What one pass over instances returned, per key."""

    losses: dict = field(default_factory=dict)
    preds: dict = field(default_factory=dict)
    seconds: float = 0.0
    utilization: dict = field(default_factory=dict)
    cpu: dict = field(default_factory=dict)        # worker -> CPU seconds / wall seconds
    skipped: dict = field(default_factory=dict)   # key -> why (non-finite, on_nonfinite="skip")
    in_flight_max: int = 1                         # most instances in flight at once
