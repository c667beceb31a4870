"""Messages, workers, control node, accumulators, schedules, backends. Knows no chemistry."""

from molpipe.runtime.accumulator import Accumulator, CountOrStale, CountOrWait, Criterion, EveryN
from molpipe.runtime.control import PipelineError, RunResult
from molpipe.runtime.message import Kind, Message
from molpipe.runtime.pipeline import Pipeline

__all__ = ["Accumulator", "CountOrStale", "CountOrWait", "Criterion", "EveryN", "Kind",
           "Message", "Pipeline", "PipelineError", "RunResult"]
