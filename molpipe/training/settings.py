"""The rules a run's settings (``molpipe.training.train.TrainConfig``) must meet, checked before any work.

Each rule names the setting as ``molpipe train`` spells it (``--epochs``), so that the same
message serves the command line, a config written by hand and the Python API.
"""

from __future__ import annotations

import math


class SettingsError(ValueError):
    """A setting outside its allowed values; the message names the option and the values."""


def _choice(*choices):
    return (lambda v: v in choices), "one of " + ", ".join(map(str, choices))


def _at_least(low, kind=int):
    return (lambda v: isinstance(v, kind) and not isinstance(v, bool) and v >= low), \
        f"{'an integer' if kind is int else 'a number'} of at least {low}"


def _positive_number():
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0), \
        "a positive number"


def _fraction():
    return (lambda v: isinstance(v, (int, float)) and 0 <= v < 1), "a number in [0, 1)"


def _zero_or_more():
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0), \
        "zero or a positive number"


#: field -> (option, check, allowed); a field that is None where the rule allows it passes
RULES = {
    "split": ("--split", lambda v: isinstance(v, str) and bool(v),
              "random, scaffold, or a JSON file of row indices"),
    "task": ("--task", *_choice(None, "regression", "classification")),
    "epochs": ("--epochs", *_at_least(1)),
    "patience": ("--patience", *_at_least(1)),
    "hidden": ("--hidden", *_at_least(1)),
    "max_rounds": ("--rounds", *_at_least(1)),
    "min_rounds": ("min_rounds", *_at_least(1)),
    "lr": ("--lr", *_positive_number()),
    "dropout": ("--dropout", *_fraction()),
    "average": ("--average", *_fraction()),
    "weight_decay": ("--weight-decay", *_zero_or_more()),
    "target_scaling": ("--target-scaling", *_choice("standard", "robust")),
    "baseline": ("--baseline", *_choice("auto", "additive", "none")),
    "propagate": ("--propagate", *_choice("split", "bond")),
    "schedule": ("--schedule", *_choice("async", "sync", "reference")),
    "max_active_keys": ("--max-active-keys", *_at_least(1)),
    "min_update_frequency": ("--min-update-frequency", *_at_least(1)),
    "backend": ("--backend", *_choice("thread", "mpi")),
    "dtype": ("dtype", *_choice("float32", "float64")),
    "stall_timeout": ("--stall-timeout", *_positive_number()),
    "on_nonfinite": ("--on-nonfinite", *_choice("stop", "skip")),
}
OPTIONAL = {"molecules_per_instance": ("--molecules-per-instance", *_at_least(1)),
            "checkpoint_minutes": ("--checkpoint-minutes", *_positive_number()),
            "limit": ("limit", *_at_least(1))}


def check_settings(config) -> None:
    """Raise SettingsError for the first setting of ``config`` outside its allowed values."""
    from molpipe.nn.readout import AGGREGATIONS

    rules = {**RULES, "aggregation": ("--aggregation", *_choice(*AGGREGATIONS))}
    for field, (option, ok, allowed) in {**rules, **OPTIONAL}.items():
        value = getattr(config, field)
        if field in OPTIONAL and value is None:
            continue
        if not ok(value):
            raise SettingsError(f"{option} must be {allowed}, not {value!r}")
    if config.min_rounds > config.max_rounds:
        raise SettingsError(f"--rounds (max_rounds) must be at least min_rounds "
                            f"({config.min_rounds}), not {config.max_rounds!r}")
    fractions = config.split_fractions
    if (len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions)
            or not math.isclose(sum(fractions), 1.0) or fractions[0] <= 0):
        raise SettingsError(f"split_fractions must be three fractions (train > 0) that sum to "
                            f"1, not {tuple(fractions)!r}")
