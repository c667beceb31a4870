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
from contextlib import contextmanager

from molpipe.runtime.stash import release

#: layouts of ``Pipeline`` workers by name: ``stages`` is one worker per stage (or the
#: ``placement`` given), ``fused`` one worker for every stage, ``replicas`` R fused workers;
#: ``auto`` is ``replicas`` where they can run (``resolve_layout``)
LAYOUTS = ("auto", "stages", "fused", "replicas")
DEFAULT_REPLICAS = 2


class SharedOptimizer:
    """One stage's optimizer shared by replicas: ``step`` runs under a lock; everything else
    (``state``, ``lr``, ``state_dict``, ...) is the wrapped optimizer's.

    It also stashes weights across replicas (PipeDream's weight stashing, where the other
    replica is what moves the weights): ``version`` counts its steps, a forward records the
    version it read (``stash_view(stage).forward``), and a step copies the parameters first
    while a forward of the current version still waits for its backward, which then runs on
    that copy.
    """

    def __init__(self, optimizer, params: dict):
        self.optimizer = optimizer
        self.params = params           # the stage's own (a frozen stage's optimizer holds none)
        self.lock = threading.Lock()
        self.version = 0
        self._at: dict = {}            # (key, step) -> version its forward read
        self._refs: dict[int, int] = {}
        self._copies: dict[int, dict] = {}

    def step(self, grads, scale: float) -> None:
        with self.lock:
            if self._refs.get(self.version):
                self._copies[self.version] = {k: p.copy() for k, p in self.params.items()}
            self.optimizer.step(grads, scale)
            self.version += 1

    def stash_view(self, stage) -> "_ReplicaStash":
        """A ``WeightStash``-like view for one replica's twin of the stage."""
        return _ReplicaStash(self, stage)

    def __getattr__(self, name):
        return getattr(self.optimizer, name)


class _ReplicaStash:
    """``WeightStash``'s interface over a ``SharedOptimizer``'s versions (the worker's own
    accumulator versions, passed in, count only its own replica's updates: ignored)."""

    def __init__(self, shared: SharedOptimizer, stage):
        self.shared, self.stage = shared, stage

    def forward(self, key, step: int, version: int = 0) -> None:
        sh = self.shared
        with sh.lock:
            v = sh._at[(key, step)] = sh.version
            sh._refs[v] = sh._refs.get(v, 0) + 1

    def before_update(self, version: int) -> None:
        """Nothing: the shared optimizer copies under its lock, right before it steps."""

    @contextmanager
    def backward(self, key, step: int, current: int = 0):
        sh = self.shared
        with sh.lock:
            v = sh._at.pop((key, step), None)
            copy = sh._copies.get(v) if v is not None and v != sh.version else None
        live = self.stage.params
        if copy is not None:
            self.stage.params = copy
        try:
            yield
        finally:
            self.stage.params = live
            if v is not None:
                with sh.lock:
                    release(sh._refs, sh._copies, v)

    @property
    def n_versions(self) -> int:
        return len(self.shared._copies)


def pick_replica(load: list[int], turn: int) -> int:
    """The replica a new instance goes to: the fewest in flight (``load``), ties taken in
    turn from ``turn`` on (so that at one in flight the replicas alternate). The control
    node's rule, and the simulator's."""
    low = min(load)
    return next(i % len(load) for i in range(turn, turn + len(load)) if load[i % len(load)] == low)


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
