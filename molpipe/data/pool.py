"""Blocks featurized on worker processes, results in input order.

A worker that dies mid-block (killed, out of memory, a crash inside RDKit) breaks the pool:
the pool is rebuilt and every block in flight is redone (nothing was written for them: results
are written in order, only once received). A block that has broken the pool twice is run
alone; if it breaks it alone it is split in two, and so on down to the one row that does,
which is rejected with the reason. The blocks' source may end with a DataError (a cut gzip
file, say): the blocks before it are finished first, then the error is raised.
"""

from __future__ import annotations

import multiprocessing as mp
import sys
import threading
from collections import deque
from collections.abc import Iterator
from concurrent.futures import ProcessPoolExecutor
from concurrent.futures.process import BrokenProcessPool
from dataclasses import dataclass, field

from molpipe.data.blocks import Block
from molpipe.data.errors import DataError
from molpipe.data.records import Spec, dead_row, featurize_block, init_worker, records

WINDOW = 3                     # blocks in flight per worker
MAX_DEAD_ROWS = 100            # rows that killed a worker on their own before the build stops


@dataclass
class _Task:
    block: Block
    kind: str
    payload: object
    final: bool                # the block's last piece
    failures: int = 0
    alone: bool = False
    future: object = field(default=None, repr=False)


def featurize_blocks(spec: Spec, blocks: Iterator[Block], n_jobs: int
                     ) -> Iterator[tuple[Block, dict, bool]]:
    """(block, ``featurize_block`` result, whether it is the block's last piece), in order.

    A block is one piece unless it had to be split (see the module docstring); the rows of a
    piece are numbered within its block.
    """
    if n_jobs <= 1:
        for b in blocks:
            yield b, featurize_block(spec, b.kind, b.payload), True
        return
    method = "fork" if sys.platform == "linux" and threading.active_count() == 1 else "spawn"
    if method == "fork":            # compiled (or loaded from numba's cache) once, not per worker
        featurize_block(spec, "records", [])
    context = mp.get_context(method)
    pool = ProcessPoolExecutor(n_jobs, mp_context=context, initializer=init_worker)
    pending: deque[_Task] = deque()
    error: DataError | None = None
    exhausted, dead = False, 0
    try:
        while True:
            while not exhausted and len(pending) < WINDOW * n_jobs and not (
                    pending and pending[0].alone):
                try:
                    b = next(blocks)
                except StopIteration:
                    exhausted = True
                except DataError as err:
                    error, exhausted = err, True
                else:
                    pending.append(_Task(b, b.kind, b.payload, True))
            if not pending:
                break
            head = pending[0]
            try:
                for t in ([head] if head.alone else pending):
                    if t.future is None:
                        t.future = pool.submit(featurize_block, spec, t.kind, t.payload)
                result = head.future.result()
            except BrokenProcessPool:
                pool.shutdown(wait=True, cancel_futures=True)
                pool = ProcessPoolExecutor(n_jobs, mp_context=context, initializer=init_worker)
                culprit = head.alone
                for t in pending:
                    if t.future is not None:
                        t.failures += 1
                        t.future = None
                head.failures = max(head.failures, 1)
                if not culprit:
                    head.alone = head.failures >= 2
                    continue
                recs = records(spec, head.kind, head.payload)
                if head.kind != "records":
                    recs = list(enumerate(recs, start=1))
                if len(recs) > 1:
                    half = len(recs) // 2
                    pending.popleft()
                    pending.appendleft(_Task(head.block, "records", recs[half:], head.final,
                                             1, True))
                    pending.appendleft(_Task(head.block, "records", recs[:half], False, 1, True))
                    continue
                dead += len(recs)
                if not recs:
                    result = featurize_block(spec, "records", [])
                    pending.popleft()
                    yield head.block, result, head.final
                    continue
                if dead > MAX_DEAD_ROWS:
                    raise DataError(f"{head.block.source}: featurizing processes died on "
                                    f"{dead} rows, each alone; stopping (is the machine out "
                                    "of memory?)")
                row, rec = recs[0]
                result = dead_row(spec, rec, row, "killed by a signal or crashed")
            pending.popleft()
            yield head.block, result, head.final
    finally:
        for t in pending:
            if t.future is not None:
                t.future.cancel()
        pool.shutdown(wait=True, cancel_futures=True)
    if error is not None:
        raise error
