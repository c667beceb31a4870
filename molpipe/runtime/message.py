"""Messages: everything a worker or the control node ever receives."""

from __future__ import annotations

from dataclasses import dataclass, field
from enum import Enum
from typing import Any

import numpy as np

Arrays = dict[str, np.ndarray]
Path = tuple[tuple[str, int], ...]

CONTROL = -1  # destination id of the control node


class Kind(str, Enum):
    """What a message asks for (data kinds go to a stage, control kinds to a worker or back)."""

    FORWARD = "forward"        # training forward: run the stage, cache under (key, step)
    BACKWARD = "backward"      # gradient of the stage's outputs travelling back
    EVAL = "eval"              # evaluation forward: no cache, no backward
    RESULT = "result"          # loss stage -> control: loss and prediction of an instance
    DONE = "done"              # first stage -> control: the instance's backward is complete
    ERROR = "error"            # worker -> control: an exception with its traceback
    UPDATE = "update"          # control -> worker: step every hosted stage now (sync schedule)
    UPDATED = "updated"        # worker -> control: the update asked for is applied
    REPORT = "report"          # control -> worker: send your counters and trace
    STATS = "stats"            # worker -> control: counters and trace (then reset)
    STOP = "stop"              # sentinel: leave the queue loop
    PUBLISH = "publish"        # control -> worker: keep a copy of your parameters as ``version``
    PUBLISHED = "published"    # worker -> control: the copy is made
    RETIRE = "retire"          # control -> worker: drop the copy ``version`` (no eval uses it)
    WAKE = "wake"              # anyone -> control: look at your request queue (live pipeline)


DATA_KINDS = frozenset({Kind.FORWARD, Kind.BACKWARD, Kind.EVAL})
TO_CONTROL = frozenset({Kind.RESULT, Kind.DONE, Kind.ERROR, Kind.UPDATED, Kind.STATS,
                        Kind.PUBLISHED, Kind.WAKE})


@dataclass(frozen=True, slots=True)
class Message:
    """One message between the control node and the workers.

    Fields
    ------
    kind : Kind                     what the receiver must do
    key : hashable                  the instance's key (None for worker-wide control kinds)
    stage : str | None              destination stage of data kinds; source stage otherwise
    step : int                      step of the destination stage (round index of a loop)
    payload : dict[str, ndarray]    activations (forward/eval), their gradients (backward),
                                    or the loss stage's outputs (result)
    path : tuple[(stage, step)]     route state: (stage, step) visited before this one, in
                                    order; the backward pops it from the end
    inst : object                   the immutable instance travelling with the message
    worker : int | None             destination worker of UPDATE/REPORT/STOP; source worker
                                    of control-bound kinds
    skip : str | None               why the instance is skipped (NaN/inf under
                                    ``on_nonfinite="skip"``): on a RESULT, on every BACKWARD
                                    that then only drops caches, and on its DONE
    error : str | None              the traceback of an ERROR
    stats : dict | None             a worker's counters and trace (STATS)
    version : int | None            an EVAL computed with the published parameter copy of
                                    that number at every stage (None: the live parameters);
                                    the copy PUBLISH makes and RETIRE drops
    replica : int                   which replica of the pipeline a data message travels
                                    in (0 unless the pipeline has ``replicas`` > 1)
    """

    kind: Kind
    key: Any = None
    stage: str | None = None
    step: int = 0
    payload: Arrays = field(default_factory=dict)
    path: Path = ()
    inst: Any = None
    worker: int | None = None
    skip: str | None = None
    error: str | None = None
    stats: dict | None = None
    version: int | None = None
    replica: int = 0


STOP = Message(Kind.STOP)


def destination(msg: Message, placement: dict[str, int]) -> int:
    """Worker id that must receive ``msg`` (``CONTROL`` for the control node).

    Every backend routes with this one function: control-bound kinds go to the control
    node, messages naming a worker go to it, data messages go to the worker hosting their
    destination stage (in replica r > 0 of a replicated pipeline: the worker
    ``placement[(stage, r)]``).
    """
    if msg.kind in TO_CONTROL:
        return CONTROL
    if msg.worker is not None:
        return msg.worker
    return placement[(msg.stage, msg.replica) if msg.replica else msg.stage]


def n_atoms(inst) -> int:
    """Atoms of an instance, for admission and update criteria by atoms (the runtime knows
    no chemistry: an instance without an ``n_atoms`` attribute weighs one)."""
    return int(getattr(inst, "n_atoms", 1))
