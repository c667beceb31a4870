"""Non-finite activations: what a worker does when a training forward yields NaN or inf.

``stop`` (the default of a training run) raises NonFiniteError in the worker, which the
control node turns into a PipelineError naming worker, stage and key. ``skip`` drops the
instance: its caches are popped along its path by a backward message carrying the reason
(``Message.skip``) that computes nothing and adds no gradient, and the control node lists the key as skipped.
A worker also checks the gradients a backward makes: a non-finite input gradient, or a
non-finite parameter gradient gathered for an instance, stops the run under ``stop`` (before
any update applies it) and under ``skip`` turns the rest of that instance's backward into such
a skip (the stage drops its gathered gradient); the DONE that ends it tells the control node
why. The network's heavy stages count the NaN/inf their kernels write (``Stage.nonfinite``):
a zero count spares the worker its own pass over those arrays.
"""

from __future__ import annotations

import numpy as np

from molpipe.kernels.finite import count_nonfinite

POLICIES = ("stop", "skip")


class NonFiniteError(ValueError):
    """A stage produced NaN or inf for an instance (policy ``stop``)."""


def check_policy(policy: str | None) -> str | None:
    """``policy`` if it is None, "stop" or "skip"; ValueError otherwise."""
    if policy is not None and policy not in POLICIES:
        raise ValueError(f"on_nonfinite must be one of {POLICIES}, got {policy!r}")
    return policy


_COUNTED = (np.dtype(np.float32), np.dtype(np.float64))


def all_finite(a: np.ndarray) -> bool:
    """True when ``a`` holds no NaN and no inf (arrays that are not floats always do)."""
    if a.dtype in _COUNTED and a.flags.c_contiguous:
        return count_nonfinite(a) == 0
    return a.dtype.kind not in "fc" or bool(np.isfinite(a).all())


def first_nonfinite(payload: dict, inputs: dict | None = None) -> str | None:
    """Name of the first floating array of ``payload`` holding NaN or inf, else None.

    Arrays that are ``inputs``' own (the same object under the same name: a stage passing
    its input through) were checked where they were made and are not checked again.
    """
    for name, a in payload.items():
        if inputs is not None and inputs.get(name) is a:
            continue
        if isinstance(a, np.ndarray) and not all_finite(a):
            return name
    return None


def describe_nonfinite(name: str, a: np.ndarray) -> str:
    """E.g. ``'loss' holds 1 NaN and 0 inf of 1 values``."""
    return (f"{name!r} holds {int(np.isnan(a).sum())} NaN and {int(np.isinf(a).sum())} inf "
            f"of {a.size} values")
