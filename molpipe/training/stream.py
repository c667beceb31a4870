"""Streamed passes over the store: which rows make which instance, held as indices only,
and the instances packed from the memory-mapped store just ahead of the control node.

An epoch's ``Plan`` cuts the training rows (sorted: contiguous in the store) into chunks of
``CHUNK`` rows, shuffles the chunks' order with the run's generator, and within each window
of ``WINDOW`` chunks shuffles the molecules and groups them by plan (``group_by_plan``).
When the rows fit in one window there is no chunk shuffle: the instances are exactly those
of ``group_by_plan`` over all the rows (what every epoch was before streaming). ``instances``
packs each instance with ``store.pack`` only when the control node draws it, so at most
about ``max_active_keys`` packed instances exist at once, whatever the number of molecules.

``train_plan`` trains on a plan (in chunks between mid-epoch checkpoints; a resumed epoch
skips, unpacked, what it had trained on), ``account_rows`` checks it covered every row
once, ``predict_plan`` predicts a plan in blocks, and ``PageBudget`` gives back the mapped
store pages a pass has read.
"""

from __future__ import annotations

import hashlib
import mmap
import time
import weakref
from collections.abc import Iterator
from dataclasses import dataclass

import numpy as np

from molpipe.data.instance import group_by_plan
from molpipe.data.store import release_pages
from molpipe.training.result import EpochResult

CHUNK = 8192          # rows of a chunk: contiguous in the store
WINDOW = 8            # chunks whose molecules are shuffled and grouped together
PAGE_BUDGET = 256 << 20  # bytes of file pages mapped since the last release (/proc)
RELEASE_EVERY = 4096  # without /proc: molecules packed between two releases
EVAL_BLOCK = 512      # instances per prediction run of a streamed evaluation


@dataclass(frozen=True)
class Plan:
    """The instances of one pass, as indices: instance ``i`` (key ``first_key + i``) holds
    the store rows ``rows[bounds[i]:bounds[i + 1]]``.

    Fields
    ------
    rows : (n_rows,) int64      store rows in the order the instances hold them
    bounds : (n_instances + 1,) int64
    first_key : int             key of the first instance (keys are consecutive)
    """

    rows: np.ndarray
    bounds: np.ndarray
    first_key: int = 0

    def __len__(self) -> int:
        return len(self.bounds) - 1

    @property
    def next_key(self) -> int:
        """The key after the plan's last."""
        return self.first_key + len(self)

    def members(self, i: int) -> np.ndarray:
        """Store rows of the plan's ``i``-th instance."""
        return self.rows[self.bounds[i]:self.bounds[i + 1]]

    def rows_of(self, key) -> np.ndarray | None:
        """Store rows of the instance ``key`` (None: not one of the plan's)."""
        i = key - self.first_key if isinstance(key, (int, np.integer)) else -1
        return self.members(int(i)) if 0 <= i < len(self) else None

    def instances(self, store, start: int = 0, stop: int | None = None) -> "PlanItems":
        """(key, Instance) of instances ``start:stop``, each packed when drawn; nothing is
        read for the instances before ``start`` (a resumed epoch's)."""
        stop = len(self) if stop is None else min(stop, len(self))
        return PlanItems(self, store, range(start, stop))


class PlanItems:
    """Some instances of a plan: an iterator of (key, Instance) pairs, packed from ``store``
    as they are drawn. What each holds (``instance_keys``; ``specs``: its store rows;
    ``weights``: atoms × (rounds + 2), its cost) is known before any is packed, so a
    data-parallel run can share them out and pack only its own (``items``)."""

    def __init__(self, plan: Plan, store, positions: range):
        self.plan, self.store, self.positions = plan, store, positions
        self._drawn: Iterator | None = None

    def __len__(self) -> int:
        return len(self.positions)

    def __iter__(self) -> "PlanItems":
        return self

    def __next__(self) -> tuple[int, object]:
        if self._drawn is None:
            self._drawn = self.items(range(len(self)))
        return next(self._drawn)

    @property
    def instance_keys(self) -> list[int]:
        return [self.plan.first_key + i for i in self.positions]

    @property
    def specs(self) -> list[np.ndarray]:
        return [self.plan.members(i) for i in self.positions]

    @property
    def weights(self) -> np.ndarray:
        lo, hi = self.plan.bounds[self.positions.start], self.plan.bounds[self.positions.stop]
        rows = self.plan.rows[lo:hi]
        if not len(rows):
            return np.zeros(0)
        starts = self.plan.bounds[self.positions.start:self.positions.stop] - lo
        atoms = np.add.reduceat(np.asarray(self.store.n_atoms[rows], np.float64), starts)
        rounds = np.maximum.reduceat(np.asarray(self.store.n_rounds[rows], np.int64), starts)
        return atoms * (rounds + 2)

    def items(self, indices) -> Iterator[tuple[int, object]]:
        """(key, Instance) of the ``indices`` (into this pass's instances), packed when drawn."""
        pages = PageBudget(self.store)
        for j in indices:
            i = self.positions[j]
            r = self.plan.members(i)
            inst = self.store.pack(r)
            LIVE.track(inst)
            yield self.plan.first_key + i, inst
            pages.read(len(r))
        pages.release()


def epoch_plan(store, rows: np.ndarray, size: int, rng: np.random.Generator | None,
               first_key: int, chunk: int | None = None, window: int | None = None) -> Plan:
    """The plan of one pass over ``rows`` (sorted store rows) in instances of at most
    ``size`` molecules of one plan; ``rng`` shuffles (None: in order, for evaluation).

    Rows that fit in one window of ``window`` chunks of ``chunk`` rows are grouped as one
    (``group_by_plan(n_rounds[rows], has_rings[rows], size, rng)``, the generator used as
    it always was); more are taken window by window, the chunks in an order ``rng`` draws.
    """
    chunk, window = chunk or CHUNK, window or WINDOW
    rows = np.asarray(rows, np.int64)
    n_chunks = -(-len(rows) // chunk)
    if n_chunks <= window:
        windows = [rows]
    else:
        order = rng.permutation(n_chunks) if rng is not None else np.arange(n_chunks)
        windows = [np.concatenate([rows[c * chunk:(c + 1) * chunk] for c in order[w:w + window]])
                   for w in range(0, n_chunks, window)]
    out, sizes = [], []
    for w in windows:
        groups = group_by_plan(store.n_rounds[w], store.has_rings[w], size, rng)
        if groups:
            out.append(w[np.concatenate(groups)])
            sizes.append(np.array([len(g) for g in groups], np.int64))
    bounds = np.zeros(sum(len(s) for s in sizes) + 1, np.int64)
    if sizes:
        np.cumsum(np.concatenate(sizes), out=bounds[1:])
    flat = np.concatenate(out) if out else np.zeros(0, np.int64)
    return Plan(flat, bounds, first_key)


def predict_plan(engine, store, plan: Plan, rows: np.ndarray, n_targets: int,
                 block: int | None = None) -> np.ndarray:
    """(len(rows), n_targets) predictions of the sorted ``rows`` whose instances ``plan``
    lists, packed as they are admitted and run ``block`` instances at a time."""
    block = block or EVAL_BLOCK
    P = np.full((len(rows), n_targets), np.nan, dtype=np.float64)
    for lo in range(0, len(plan), block):
        res = engine.predict(plan.instances(store, lo, lo + block))
        for key, pred in res.preds.items():
            P[np.searchsorted(rows, plan.rows_of(key))] = pred
    return P


def train_plan(engine, plan: Plan, store, partial: dict | None, save_partial,
               every: float | None = None, max_active_keys: int = 1,
               on_result=None) -> EpochResult:
    """Train on ``plan``'s instances, packed from ``store`` as they are admitted; with
    ``every`` (checkpoint_minutes), in chunks with ``save_partial(position, done)`` between.

    Chunks are whole groups of ``max_active_keys`` instances, so the sync schedule's updates
    fall where they would without chunks; a resumed ``partial`` epoch skips (without
    packing them) the instances it had already trained on and keeps their losses.
    """
    done = EpochResult()
    start = 0
    if partial is not None:
        start = partial["position"]
        done.losses = {int(k): v for k, v in partial["losses"].items()}
        done.skipped = {int(k): v for k, v in partial["skipped"].items()}
        done.seconds = partial["seconds"]
    n = len(plan)
    chunk = max(n, 1) if not every else max(max_active_keys, 1) * 8
    last_save = time.perf_counter()
    for lo in range(start, n, chunk):
        res = engine.train(plan.instances(store, lo, lo + chunk), on_result=on_result)
        done.losses.update(res.losses)         # (training predictions are not kept)
        done.skipped.update(res.skipped)
        done.seconds += res.seconds
        done.utilization, done.cpu = res.utilization, res.cpu
        done.in_flight_max = max(done.in_flight_max, res.in_flight_max)
        if every and lo + chunk < n and time.perf_counter() - last_save >= 60 * every:
            save_partial(lo + chunk, done)
            last_save = time.perf_counter()
    return done


def account_rows(epoch: int, plan: Plan, res, train_rows: np.ndarray) -> dict:
    """Check every training row was trained on (or skipped) exactly once this epoch.

    Returns the metrics columns: ``rows_seen`` (rows trained on), ``rows_digest`` (of their
    sorted indices), ``data_order`` (digest of the rows in the order instances were
    admitted: the epoch's data order) and ``skipped_instances``.
    """
    keys = range(plan.first_key, plan.next_key)
    if len(res.losses) != len(plan) or not all(k in res.losses for k in keys):
        raise RuntimeError(f"epoch {epoch}: {len(res.losses)} instances returned, "
                           f"{len(plan)} admitted")
    if not np.array_equal(np.sort(plan.rows), np.sort(train_rows)):
        raise RuntimeError(f"epoch {epoch}: the instances do not cover the training rows once each")
    kept = np.ones(len(plan.rows), bool)
    for k in res.skipped:
        i = k - plan.first_key
        kept[plan.bounds[i]:plan.bounds[i + 1]] = False
    seen = np.sort(plan.rows[kept])
    return {"rows_seen": int(seen.size), "rows_digest": _digest(seen),
            "data_order": _digest(plan.rows), "skipped_instances": len(res.skipped)}


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


class LiveInstances:
    """How many packed instances (and their molecules) exist now, and the most at once
    since ``reset``: the memory a streamed pass holds, counted without the noise of RSS."""

    def __init__(self):
        self.instances = self.molecules = 0
        self.peak_instances = self.peak_molecules = 0

    def track(self, inst) -> None:
        n = inst.n_mols
        self.instances += 1
        self.molecules += n
        self.peak_instances = max(self.peak_instances, self.instances)
        self.peak_molecules = max(self.peak_molecules, self.molecules)
        weakref.finalize(inst, self._gone, n)

    def _gone(self, n: int) -> None:
        self.instances -= 1
        self.molecules -= n

    def reset(self) -> None:
        self.peak_instances, self.peak_molecules = self.instances, self.molecules


LIVE = LiveInstances()


class PageBudget:
    """Releases ``store``'s mapped pages (``release_pages``) whenever the file pages this
    process maps have grown by ``PAGE_BUDGET`` since the last release (read from
    /proc/self/statm after each pack: sparse or random reads map far more than the bytes
    they use, as the kernel maps pages around each fault), or, without /proc, every
    ``RELEASE_EVERY`` molecules."""

    def __init__(self, store):
        self.store, self.molecules = store, 0
        self.base = _file_pages()

    def read(self, n_molecules: int) -> None:
        """``n_molecules`` more were packed: release if over the budget."""
        self.molecules += n_molecules
        if self.base is None:
            if self.molecules >= RELEASE_EVERY:
                self.release()
        elif (_file_pages() - self.base) * mmap.PAGESIZE > PAGE_BUDGET:
            self.release()

    def release(self) -> None:
        release_pages(self.store)
        self.molecules, self.base = 0, _file_pages()


def _file_pages() -> int | None:
    """Resident shared (file-backed) pages of this process; None without /proc."""
    try:
        with open("/proc/self/statm", "rb") as f:
            return int(f.read().split()[2])
    except (OSError, IndexError, ValueError):
        return None
