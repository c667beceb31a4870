"""Messages, workers, control node, accumulators, schedules, backends. Knows no chemistry.

    with Pipeline(stages, optimizers, route, first, max_active_keys=8) as p:
        result = p.run([(key, inst, train), ...])      # one call per epoch

- ``message``: the Message record and ``destination`` (how every backend routes).
- ``worker``: the queue loop; ``Worker.run(send, recv)`` is its whole contract with a backend.
- ``accumulator``: gradient counters and update criteria (EveryN = min_update_frequency).
- ``schedule``: async (workers update themselves) or sync (group-wise updates, no staleness).
- ``control``: admission under max_active_keys, results, watchdog, PipelineError.
- ``threads``: the thread backend; its module docstring documents the backend seam.
- ``trace``: busy intervals, utilization, JSON/CSV timelines.
- ``bench``: ``python -m molpipe.runtime.bench`` (throughput and utilization against mak).
"""

from molpipe.runtime.accumulator import Accumulator, CountOrStale, Criterion, EveryN
from molpipe.runtime.control import PipelineError, RunResult
from molpipe.runtime.message import Kind, Message
from molpipe.runtime.pipeline import Pipeline

__all__ = ["Accumulator", "CountOrStale", "Criterion", "EveryN", "Kind",
           "Message", "Pipeline", "PipelineError", "RunResult"]
