"""Replicas of the pipeline: R copies of its workers on one set of parameters (threads only).

A molecule's activations stay on the core of the worker that runs it. With every stage on one
worker (the ``fused`` layout) a replica runs an instance's whole path, the message ⇄ update
loop included, without handing activations to another core, and R such replicas keep R
cores busy. Replica r's stages are ``Stage.replica()`` twins of replica 0's: the same
parameter arrays, their own caches and gradients. A stage's optimizer is one object shared
by all replicas (``SharedOptimizer``: one lock per stage): each replica's worker gathers its
own gradients and, when its own accumulator says so, steps the shared optimizer — no
barrier between replicas, and a forward in one replica may read parameters while the other
updates them (as in Hogwild!, Recht et al. 2011). At ``max_active_keys`` 1 the replicas take
turns, one instance at a time, and training equals the reference trainer's.
"""

from __future__ import annotations

import threading

#: layouts of ``Pipeline`` workers by name: ``stages`` is one worker per stage (or the
#: ``placement`` given), ``fused`` one worker for every stage, ``replicas`` R fused workers;
#: ``auto`` is ``replicas`` where they can run (``resolve_layout``)
LAYOUTS = ("auto", "stages", "fused", "replicas")
DEFAULT_REPLICAS = 2


class SharedOptimizer:
    """One stage's optimizer shared by replicas: ``step`` runs under a lock; everything else
    (``state``, ``lr``, ``state_dict``, ...) is the wrapped optimizer's."""

    def __init__(self, optimizer):
        self.optimizer = optimizer
        self.lock = threading.Lock()

    def step(self, grads, scale: float) -> None:
        with self.lock:
            self.optimizer.step(grads, scale)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


def resolve_layout(layout: str, schedule: str, backend: str, placement) -> str:
    """``auto`` as the layout it stands for: ``replicas`` for the async schedule on threads
    without a placement of its own (measured fastest to a target: benchmarks/README.md),
    else ``stages``; any other name as it is."""
    if layout != "auto":
        return layout
    return "replicas" if schedule == "async" and backend == "thread" and not placement else "stages"


def layout_placement(layout: str, stages, placement: dict | None = None,
                     replicas: int | None = None) -> tuple[dict | None, int]:
    """``(placement, replicas)`` of a layout name for ``stages``.

    ``stages``: the given ``placement`` (None: one worker per stage), one replica unless
    ``replicas`` says more; ``fused``: every stage on worker 0, one replica; ``replicas``:
    every stage on worker 0 (or the given ``placement``) in ``replicas`` copies (default 2).
    Raises ValueError for an unknown layout, listing the choices.
    """
    if layout not in LAYOUTS:
        raise ValueError(f"unknown layout {layout!r} (choices: {', '.join(LAYOUTS)})")
    if replicas is not None and replicas < 1:
        raise ValueError(f"replicas must be >= 1, got {replicas}")
    fused = {s: 0 for s in stages}
    if layout == "fused":
        return fused, 1
    if layout == "replicas":
        return placement or fused, replicas or DEFAULT_REPLICAS
    return placement, replicas or 1


def replicated_placement(placement: dict[str, int], replicas: int) -> dict:
    """The backend's routing table: ``stage -> worker`` of replica 0 and, for replica r ≥ 1,
    ``(stage, r) -> worker + r n`` (n: workers per replica)."""
    n = max(placement.values()) + 1
    table: dict = dict(placement)
    for r in range(1, replicas):
        table.update({(s, r): w + r * n for s, w in placement.items()})
    return table
