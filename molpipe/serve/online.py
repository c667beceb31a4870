"""A model that learns while it serves: one live pipeline for predictions and training.

``OnlineModel`` owns a network, its optimizers and a ``LivePipeline`` of its stages. It
answers ``predict`` from the newest published version; ``observe`` journals rows (fsynced
before the receipt), predicts each one before it is trained on (the prequential error), then
folds it into the model as a training instance; between new rows it replays its pool (the
training split of a data set it started from, and every row folded so far) in shuffled
epochs, for ``replay_epochs`` epochs after the last new row. ``snapshot`` writes, at a drain
point of the pipeline, the model directory (``model/``, what ``molpipe predict`` reads) and a
checkpoint (parameters, optimizer state and the sequence numbers folded so far); a restart
resumes from the newest checkpoint and replays the journal rows it had not folded.

Built by ``molpipe.serve.build`` (from a run directory, a data set, or nothing).
"""

from __future__ import annotations

import itertools
import threading
import time
from collections import deque
from pathlib import Path

import numpy as np

from molpipe.data.instance import auto_instance_size, pack, pack_by_plan
from molpipe.inference.predict import BATCH
from molpipe.io.checkpoint import save_checkpoint
from molpipe.io.model import save_model
from molpipe.runtime.live import LivePipeline
from molpipe.serve.journal import Journal
from molpipe.serve import state
from molpipe.serve.defaults import PUBLISH_EVERY, REPLAY_EPOCHS, SNAPSHOT_EVERY
from molpipe.serve.metrics import Requests, status as status_of
from molpipe.serve.prequential import Prequential
from molpipe.training.metrics import metrics_table, summary

#: most new rows folded in one training instance (rows of one plan, oldest first)
FOLD_SIZE = 16
#: new rows predicted at once (before they are trained on)
PREDICT_BATCH = 256
#: rows observed but not yet folded beyond which /observe asks clients to come back later
MAX_PENDING = 10_000


class Busy(RuntimeError):
    """Too many observed rows wait to be folded: nothing was journaled; retry later."""


class OnlineModel:
    """Parameters
    ----------
    network, optimizers : the model (parameters loaded) and one optimizer per stage
    predictor : ``Predictor`` around ``network``: featurizes as the model was trained
    meta : what model/config.json records besides the network (dims, targets, task, featurizer)
    engine : a ``PipelineEngine`` of ``network`` (not started): its pipeline is the live one
    out : directory of the journal, rejects, prequential log, model/ and checkpoints/
    pool : (graphs, Y) training rows to replay from the start (a data set's training split)
    val : ([(instance, rows)], Y) evaluated after every replay epoch, or None
    domain_arrays : the applicability domain written with every model/ (None: none)
    fit_scaling : set the loss stage's target mean and scale from the first rows observed
                  (a model that starts untrained and without data)
    featurize_jobs : processes that featurize large requests (0: in this process)
    lr_schedule : (lr, epochs): the replay epochs follow ``molpipe train``'s warm-up and decay
                  over ``epochs`` (then stay at its last rate); None: the optimizers' rate
    """

    def __init__(self, network, optimizers: dict, predictor, engine, out: str | Path, *,
                 meta: dict,
                 pool=None, val=None, domain_arrays=None, fit_scaling: bool = False,
                 seed: int = 0, publish_every: float = PUBLISH_EVERY,
                 replay_epochs: int = REPLAY_EPOCHS, snapshot_every: float = SNAPSHOT_EVERY,
                 settings: dict | None = None,
                 lr_schedule: tuple[float, int] | None = None, featurize_jobs: int = 0):
        self.network, self.optimizers, self.predictor = network, optimizers, predictor
        self.targets, self.task = predictor.targets, predictor.task
        self.out = Path(out)
        self.out.mkdir(parents=True, exist_ok=True)
        self.settings, self.meta, self.engine = settings or {}, meta, engine
        self.domain_arrays, self.fit_scaling = domain_arrays, fit_scaling
        self.replay_epochs, self.snapshot_every = replay_epochs, snapshot_every
        self.lr_schedule = lr_schedule
        self.max_pending = MAX_PENDING
        self.featurize_jobs, self._featurizer = featurize_jobs, None
        # the live arrays (a stage's ``params``/``buffers`` attribute is swapped while it
        # runs an evaluation or a stashed backward; these dict objects stay the live ones)
        self._params = {n: s.params for n, s in network.stages.items()}
        self._buffers = {n: s.buffers for n, s in network.stages.items()}
        self.rng = np.random.default_rng(seed)
        self.journal = Journal(self.out, self.targets)
        self.prequential = Prequential(self.out, self.targets, self.task)
        self._lock = threading.Lock()
        self._snap_lock = threading.Lock()
        self.pool_graphs: list = list(pool[0]) if pool else []
        self.pool_y: list = list(pool[1]) if pool else []
        self.val = val
        self.history: list[dict] = []          # validation after each replay epoch
        self.folded: list[int] = []            # sequence numbers folded, in order
        self.epochs, self.epochs_since_new = 0, 0
        self._marked = 0                       # the last epoch whose validation was asked for
        self.n_mols_trained, self.n_snapshots = 0, 0
        self._epoch: deque = deque()
        self._to_predict: deque = deque()      # (seq, graph, y) new, not yet predicted
        self._predict_due = threading.Event()
        self._to_fold: dict = {}               # plan -> deque of (seq, graph, y) predicted,
                                               # not yet trained on
        self._folding: dict = {}               # key -> seqs of a fold in flight
        self._sizes: dict = {}                 # key -> molecules, of training in flight
        self._keys = itertools.count(1)
        self._val_due = threading.Event()
        self.train_loss = float("nan")
        self.t_start = time.time()
        self.training = True
        self.requests = Requests()
        self._stopping = threading.Event()
        self._restored_version = -1
        state.restore(self)
        self.live = LivePipeline(engine.pipeline, self._next_train, on_trained=self._trained,
                                 publish_every=publish_every,
                                 first_version=self._restored_version + 1)
        self._threads: list[threading.Thread] = []

    # -- life -------------------------------------------------------------------------------
    def start(self) -> "OnlineModel":
        self.live.start()
        helpers = ((lambda: state.replay_journal(self), "replay"),
                   (self._predict_loop, "prequential"),
                   (self._snapshot_loop, "snapshots"), (self._val_loop, "validation"))
        for target, name in helpers:
            t = threading.Thread(target=target, name=f"molpipe-{name}", daemon=True)
            t.start()
            self._threads.append(t)
        return self

    def stop(self, snapshot: bool = True) -> None:
        """Snapshot (unless told not to), stop the pipeline and the helpers."""
        if snapshot and self.live.error is None:
            try:
                self.snapshot()
            except RuntimeError:
                pass
        self._stopping.set()
        self._val_due.set()
        self._predict_due.set()
        self.live.stop()
        for t in self._threads:
            t.join(5)
        self.journal.close()
        self.prequential.close()
        if self._featurizer is not None:
            self._featurizer.close()

    @property
    def error(self) -> str | None:
        return None if self.live.error is None else str(self.live.error)

    # -- predictions ------------------------------------------------------------------------
    def featurize(self, smiles: list[str]):
        """(graphs, kept indices, errors) of SMILES strings; errors "" where read (large
        requests on the ``featurize_jobs`` processes)."""
        if self._featurizer is None:
            from molpipe.serve.featurizer import Featurizer

            p = self.predictor
            self._featurizer = Featurizer(p.min_rounds, p.max_rounds, self.featurize_jobs)
        return self._featurizer(smiles)

    def _instances(self, graphs, Y, size: int = BATCH, rng=None):
        """``pack_by_plan`` with the features the model was trained on: (inst, rows) pairs."""
        return [(self.predictor.fit_features(inst), rows)
                for inst, rows in pack_by_plan(graphs, Y, size, rng)]

    def predict_graphs(self, graphs, timeout: float = 60.0) -> tuple[int, np.ndarray]:
        """(version, predictions (n, n_targets) in data units) through the live pipeline."""
        P = np.full((len(graphs), len(self.targets)), np.nan)
        if not graphs:
            return self.live.version, P
        parts = self._instances(graphs, np.full((len(graphs), len(self.targets)), np.nan))
        version, preds = self.live.evaluate([inst for inst, _ in parts]).result(timeout)
        for (_, rows), pred in zip(parts, preds):
            P[rows] = pred
        return version, P

    # -- observations -----------------------------------------------------------------------
    def observe(self, rows: list[tuple[str, list]], source: dict | None = None) -> dict:
        """Journal ``(smiles, values)`` rows (fsynced), then predict and fold them.

        Returns the receipt: sequence numbers of the rows kept, and the rows rejected (a
        SMILES the featurizer cannot read) with their index and reason. ``source``: kept
        with the rows in the journal (``Journal.last_source``).
        """
        pending = self.journal.last_seq - len(self.folded)
        if pending + len(rows) > self.max_pending:
            raise Busy(f"{pending} observed rows wait to be trained on (limit "
                       f"{self.max_pending}); nothing of this request was kept, retry later")
        graphs, kept, errors = self.featurize([s for s, _ in rows])
        rejected = [(i, rows[i][0], errors[i]) for i in range(len(rows)) if errors[i]]
        self.journal.reject([(s, why) for _, s, why in rejected])
        seqs = self.journal.append([rows[i] for i in kept], source)
        if seqs:
            self._submit(seqs, graphs, np.array([rows[i][1] for i in kept], np.float64))
        return {"accepted": len(seqs), "seqs": [seqs[0], seqs[-1]] if seqs else None,
                "rejected": [{"row": i, "smiles": s, "reason": why} for i, s, why in rejected]}

    def _submit(self, seqs: list[int], graphs: list, Y: np.ndarray) -> None:
        """Queue new rows to be predicted (prequential), then trained on."""
        if self.fit_scaling:
            self.live.at_drain(lambda: self._set_scaling(Y)).result(60)
        with self._lock:
            self._to_predict.extend(zip(seqs, graphs, np.asarray(Y, np.float64)))
        self._predict_due.set()

    def _predict_loop(self) -> None:
        """Predict waiting new rows, ``PREDICT_BATCH`` at a time in instances of one plan,
        one batch in flight (a flood of small /observe requests neither floods the workers'
        queues nor starves training); then hand them to the training source."""
        while not self._stopping.is_set():
            self._predict_due.wait(1.0)
            with self._lock:
                batch = [self._to_predict.popleft()
                         for _ in range(min(len(self._to_predict), PREDICT_BATCH))]
                if not self._to_predict:
                    self._predict_due.clear()
            if not batch:
                continue
            seqs = np.array([b[0] for b in batch])
            graphs, Y = [b[1] for b in batch], np.array([b[2] for b in batch])
            parts = self._instances(graphs, Y)
            try:
                version, preds = self.live.evaluate([inst for inst, _ in parts],
                                                    urgent=False).result()
            except RuntimeError:               # the pipeline stopped: the rows stay in the
                return                         # journal, unfolded
            with self._lock:
                for (inst, rows), pred in zip(parts, preds):
                    self.prequential.add(seqs[rows].tolist(), Y[rows], np.asarray(pred), version)
                    plan = (inst.n_rounds, inst.has_rings)
                    self._to_fold.setdefault(plan, deque()).extend(
                        (int(seqs[i]), graphs[i], Y[i]) for i in rows)
            self.live.wake()

    def _set_scaling(self, Y: np.ndarray) -> None:
        """Target mean and scale from the first rows (at a drain point: nothing in flight
        trains, and evaluations use their own version's copies)."""
        if not self.fit_scaling:
            return
        loss = self._buffers["loss"]
        for j in range(len(self.targets)):
            y = Y[:, j][np.isfinite(Y[:, j])]
            if self.task == "regression" and y.size:
                loss["mean"][j] = y.mean()
                loss["std"][j] = y.std() if y.size > 1 and y.std() > 0 else max(abs(y.mean()), 1.0)
        self.fit_scaling = False

    # -- the training source (called in the loop thread) -------------------------------------
    def _next_train(self):
        if not self.training:                  # paused: new rows wait, predicted, unfolded
            return None
        if self._to_fold:                      # new rows first, packed by plan
            with self._lock:
                plan = min(self._to_fold, key=lambda p: self._to_fold[p][0][0])   # oldest
                rows = self._to_fold[plan]
                take = [rows.popleft() for _ in range(min(len(rows), FOLD_SIZE))]
                if not rows:
                    del self._to_fold[plan]
            seqs, graphs, Y = [t[0] for t in take], [t[1] for t in take], np.array([t[2] for t in take])
            inst = self.predictor.fit_features(pack(graphs, Y.astype(np.float32)))
            key = next(self._keys)
            self._folding[key] = (seqs, graphs, Y)
            self._sizes[key] = inst.n_mols
            return key, inst
        if not self._epoch and not self._new_epoch():
            return None
        key, inst = self._epoch.popleft()
        self._sizes[key] = inst.n_mols
        return key, inst

    def _new_epoch(self) -> bool:
        with self._lock:                       # (a restart's replay may be adding to it)
            pool_graphs, pool_y = list(self.pool_graphs), list(self.pool_y)
        n = len(pool_graphs)
        if self.epochs > self._marked:         # the last epoch is all admitted: score it
            self._marked = self.epochs
            self._val_due.set()
        if n == 0 or self.epochs_since_new >= self.replay_epochs:
            return False
        size = auto_instance_size(np.array([g.n_atoms for g in pool_graphs]))
        Y = np.array(pool_y, np.float32).reshape(n, len(self.targets))
        for inst, _ in self._instances(pool_graphs, Y, size, self.rng):
            self._epoch.append((next(self._keys), inst))
        if self.lr_schedule is not None:
            from molpipe.training.train import lr_at

            lr, epochs = self.lr_schedule
            for opt in self.optimizers.values():
                opt.lr = lr_at(min(self.epochs, epochs - 1), epochs, lr)
        self.epochs += 1
        self.epochs_since_new += 1
        return True

    def _trained(self, key, loss: float) -> None:
        self.n_mols_trained += self._sizes.pop(key, 0)
        if np.isfinite(loss):
            self.train_loss = loss if not np.isfinite(self.train_loss) else \
                0.98 * self.train_loss + 0.02 * loss
        fold = self._folding.pop(key, None)
        if fold is None:
            return
        seqs, graphs, Y = fold
        self.folded.extend(seqs)
        self._add_to_pool(graphs, Y)
        self.epochs_since_new = 0

    def _add_to_pool(self, graphs, Y) -> None:
        with self._lock:
            self.pool_graphs.extend(graphs)
            self.pool_y.extend(np.asarray(Y, np.float32).reshape(len(graphs), -1))

    # -- validation after replay epochs --------------------------------------------------------
    def _val_loop(self) -> None:
        while not self._stopping.is_set():
            self._val_due.wait()
            self._val_due.clear()
            if self._stopping.is_set() or self.val is None or self.live.error is not None:
                continue
            try:
                self.validate(self._marked)
            except RuntimeError:
                return

    def validate(self, epoch: int | None = None) -> dict:
        """Metrics of the validation rows with the newest version (appended to history,
        labelled ``epoch``: the replay epoch whose instances were all admitted before)."""
        parts, Y = self.val
        version, preds = self.live.evaluate([inst for inst, _ in parts]).result(600)
        P = np.full(Y.shape, np.nan)
        for (_, rows), pred in zip(parts, preds):
            P[rows] = pred
        metrics = metrics_table(self.task, self.targets, Y, P)
        row = {"epoch": self.epochs if epoch is None else epoch, "version": version,
               "t": round(time.time() - self.t_start, 2),
               "molecules_trained": self.n_mols_trained, **summary(self.task, metrics)}
        self.history.append(row)
        return row

    # -- snapshots and restarts ----------------------------------------------------------------
    def snapshot(self) -> dict:
        """Write model/ and a checkpoint of the state at the next drain point."""
        with self._snap_lock:
            t0 = time.perf_counter()
            cap = self.live.at_drain(lambda: state.capture(self)).result(300)
            n = self.n_snapshots + 1
            save_model(self.out / "model", self.network.config, cap["model"], self.meta,
                       self.domain_arrays)
            save_checkpoint(self.out, n, cap["state"], cap["arrays"])
            self.n_snapshots = n
            return {"snapshot": n, "version": cap["state"]["version"],
                    "rows_folded": len(cap["arrays"]["serve/folded"]),
                    "model": str(self.out / "model"),
                    "seconds": round(time.perf_counter() - t0, 3)}

    def _snapshot_loop(self) -> None:
        seen = None
        while not self._stopping.wait(self.snapshot_every):
            now = (self.live.n_trained, self.journal.last_seq)
            if now != seen and self.live.error is None:
                try:
                    self.snapshot()
                    seen = now
                except RuntimeError:
                    return

    # -- status ---------------------------------------------------------------------------------
    def set_training(self, on: bool) -> None:
        self.training = bool(on)
        self.live.wake()

    def status(self) -> dict:
        """What /status answers (``molpipe.serve.metrics.status``)."""
        return status_of(self)
