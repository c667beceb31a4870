"""Featurizing a request's molecules beside the service's process.

RDKit holds the GIL while it parses: in the service's own process featurizing is the
ceiling of /predict (about 2,200 molecules/s on one core, whatever the number of request
threads). ``Featurizer`` sends a large request's SMILES in chunks to worker processes and
keeps small requests (a latency matter) in process. Only SMILES strings go out and only
molpipe's own ``MolGraph`` arrays come back, between processes this service started.
"""

from __future__ import annotations

import multiprocessing as mp
from concurrent.futures import ProcessPoolExecutor

from molpipe.chem.featurize import featurize

CHUNK = 32          # molecules per task
INLINE = 32         # requests of fewer molecules are featurized in process


def featurize_many(smiles: list[str], min_rounds: int, max_rounds: int) -> list:
    """MolGraph or the reason (a string) for every SMILES."""
    out = []
    for s in smiles:
        try:
            out.append(featurize(s, min_rounds=min_rounds, max_rounds=max_rounds))
        except Exception as err:                 # every molecule is answered or explained
            out.append(str(err) or type(err).__name__)
    return out


class Featurizer:
    """``(graphs, kept indices, errors)`` of SMILES, on ``jobs`` processes for large requests
    (``jobs=0``: always in process)."""

    def __init__(self, min_rounds: int, max_rounds: int, jobs: int = 2):
        self.rounds = (min_rounds, max_rounds)
        self.jobs = jobs
        self.pool = None
        if jobs > 0:      # spawn: this process has threads (a fork could copy a held lock)
            self.pool = ProcessPoolExecutor(jobs, mp_context=mp.get_context("spawn"))
            self.pool.submit(featurize_many, ["C"], *self.rounds).result()   # warm

    def __call__(self, smiles: list[str]):
        if self.pool is None or len(smiles) < INLINE:
            results = featurize_many(smiles, *self.rounds)
        else:
            futures = [self.pool.submit(featurize_many, smiles[i:i + CHUNK], *self.rounds)
                       for i in range(0, len(smiles), CHUNK)]
            results = [r for f in futures for r in f.result()]
        graphs, kept, errors = [], [], [""] * len(smiles)
        for i, r in enumerate(results):
            if isinstance(r, str):
                errors[i] = r
            else:
                graphs.append(r)
                kept.append(i)
        return graphs, kept, errors

    def close(self) -> None:
        if self.pool is not None:
            self.pool.shutdown(wait=False, cancel_futures=True)
            self.pool = None
