"""The protocol a stage meets to run in a worker: owns its parameters, caches under
(key, step), adds gradients. The runtime defines it and knows no network; ``molpipe.nn``'s
stages (and the runtime's synthetic benchmark stages) implement it."""

from __future__ import annotations

import copy
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]


class Stage:
    """Base of every stage.

    A stage owns ``params`` (name -> array) and ``grads`` (same shapes). ``forward`` computes
    the stage's outputs from its inputs; when ``train`` is true it caches what ``backward``
    needs under ``(key, step)``. ``backward`` pops that entry, *adds* parameter gradients to
    ``grads`` and returns the gradients of the inputs. The stage knows nothing about threads,
    messages or other stages: ``inst`` is the immutable packed instance (graph structure and
    targets) that travels with every message.
    """

    name: str = "stage"
    #: NaN/inf values the stage's kernels counted in what its last forward or backward made
    #: (outputs; input gradients and the gathered parameter gradients). None: the stage does
    #: not count, and a worker checking for non-finite values scans those arrays itself; 0
    #: spares it that second pass; more sends it looking for the array to name.
    nonfinite: int | None = None

    def __init__(self, params: Arrays):
        self.params = params
        self.grads = {k: np.zeros_like(v) for k, v in params.items()}
        #: non-trainable arrays that are part of the model (saved with the parameters)
        self.buffers: Arrays = {}
        self._cache: dict[tuple[Any, int], Any] = {}

    # -- to implement -------------------------------------------------------------------
    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        raise NotImplementedError

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        raise NotImplementedError

    # -- shared -------------------------------------------------------------------------
    def save(self, key, step: int, value) -> None:
        self._cache[(key, step)] = value

    def pop(self, key, step: int):
        return self._cache.pop((key, step))

    @property
    def n_cached(self) -> int:
        """Cache entries still held; zero once every instance's backward has passed."""
        return len(self._cache)

    def replica(self) -> "Stage":
        """A copy of the stage for another replica of the pipeline: the same parameter and
        buffer arrays (an update by either is seen by both), its own gradients and cache."""
        twin = copy.copy(self)
        twin.grads = {k: np.zeros_like(v) for k, v in self.params.items()}
        twin._cache = {}
        # a forward or backward replaced on the object (a fault injected by a test) is bound
        # to this stage: the twin gets its own, through the wrapper's ``for_stage``
        for name in ("forward", "backward"):
            own = self.__dict__.get(name)
            if own is None:
                continue
            holder = getattr(own, "__self__", own)
            if not hasattr(holder, "for_stage"):
                raise TypeError(f"stage {self.name!r}: its {name} was replaced by {own!r}, "
                                "which has no for_stage(stage) to follow it into a replica")
            wrapped = holder.for_stage(twin)
            twin.__dict__[name] = wrapped if holder is own else getattr(wrapped, own.__name__)
        return twin

    def clear_cache(self) -> None:
        self._cache.clear()

    def zero_grad(self) -> None:
        for g in self.grads.values():
            g.fill(0.0)

    @property
    def n_parameters(self) -> int:
        return int(sum(p.size for p in self.params.values()))
