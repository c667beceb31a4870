"""The session builder: data → split → target scaling → network → optimizers → engine.

One ``Session`` per run's settings (``TrainConfig``) wires what ``molpipe train``, ``molpipe
bench``, ``molpipe simulate`` and ``molpipe evaluate`` share, so they cannot drift apart:

    session = Session(config)                 # the data set opened and split
    session.fit_scaling()                     # baseline, mean and scale on the training rows
    network = session.network()
    optimizers = session.optimizers(network)
    plan = session.plan(rows, rng, key)       # an epoch as indices (molpipe.training.stream)
    with session.engine(network, optimizers) as engine:
        engine.train(plan.instances(session.store))     # packed as the control node admits

Nothing here holds the molecules of a split: instances are packed from the memory-mapped
store when they are needed, and scaling and evaluation stream through it in chunks.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Sequence

import numpy as np

from molpipe.data.checks import check_labels, check_targets
from molpipe.data.instance import auto_instance_size
from molpipe.data.scaling import AdditiveFit, instance_sums, target_scale
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.runtime.placement import parse_placement
from molpipe.training.engines import gather_predictions, make_engine, make_optimizers
from molpipe.training.metrics import metrics_table
from molpipe.training.settings import TrainConfig
from molpipe.training.stream import LIVE, PageBudget, Plan, epoch_plan, predict_plan

#: auto baseline: a target is extensive when the additive fit carries this share of its
#: training variance (QM9 u0 1.000, cv 0.97; ESOL 0.78, FreeSolv 0.84, gap 0.73)
EXTENSIVE_R2 = 0.9
SCALING_CHUNK = 2048     # molecules packed at a time to fit the additive baseline


@dataclass
class Prepared:
    """A data set made ready for training: its store, split, targets and task."""

    store: object
    split: dict
    targets: list[str]
    task: str


@dataclass
class Scaling:
    """What the network's loss stage is built with: per-target mean and scale of what the
    network learns, and the additive baseline (``atom_ref``, None without one)."""

    mean: np.ndarray
    std: np.ndarray
    atom_ref: np.ndarray | None = None
    baseline: dict = field(default_factory=lambda: {"kind": "none"})


def open_store(config: TrainConfig, targets=None, on_featurize=None):
    """The graph store of ``config.data`` (featurized once, then cached; ``on_featurize(done,
    total)`` while it is featurized), with ``targets`` (default: the settings')."""
    from molpipe.data.store import open_data

    return open_data(config.data, targets=config.targets if targets is None else targets,
                     smiles_column=config.smiles_column, cache_root=config.cache_root,
                     progress=on_featurize, min_rounds=config.min_rounds,
                     max_rounds=config.max_rounds)


def split_indices(smiles: Sequence[str], how: str, fractions, seed: int, Y=None,
                  task: str | None = None) -> dict:
    """{'train','val','test'} -> sorted indices into ``smiles``: one of ``splits.SPLITS``
    (``stratified`` reads ``Y``'s first target and ``task``) or a JSON file. The random
    and stratified splits read only ``len(smiles)``."""
    from molpipe.data import splits

    if how == "random":
        parts = splits.random_split(len(smiles), fractions, seed)
    elif how == "scaffold":
        parts = splits.scaffold_split(smiles, fractions, seed)
    elif how == "scaffold-balanced":
        parts = splits.balanced_scaffold_split(smiles, fractions, seed)
    elif how == "kmeans":
        parts = splits.kmeans_split(smiles, fractions, seed)
    elif how == "stratified":
        if Y is None or task is None:
            raise ValueError("the stratified split needs the targets Y and the task")
        parts = splits.stratified_split(Y[: len(smiles)], task, fractions, seed)
    else:
        parts = splits.split_from_file(how)
    return {name: np.asarray(p, dtype=np.int64) for name, p in zip(("train", "val", "test"), parts)}


def column_split(store, column: str, n: int) -> dict:
    """The split the data file's ``column`` gives the first ``n`` molecules of ``store``
    (read from the source file by each molecule's ``source_row``)."""
    from molpipe.data import splits

    parts = splits.split_from_column(store.meta["source"]["path"], column,
                                     store.source_row[:n], store.meta.get("smiles_column"))
    return dict(zip(("train", "val", "test"), parts))


def infer_task(Y: np.ndarray) -> str:
    """Classification when every known target is 0 or 1, else regression."""
    known = Y[np.isfinite(Y)]
    return "classification" if known.size and np.isin(known, (0.0, 1.0)).all() else "regression"


def prepare(config: TrainConfig, progress=None) -> Prepared:
    """Open (preprocessing once) the data set, check its targets and split it."""
    emit = progress or (lambda event, **kw: None)
    store = open_store(config, on_featurize=lambda done, total: emit("preprocess", done=done,
                                                                      total=total))
    check_targets(store, str(config.data))
    task = config.task or infer_task(store.targets)
    check_labels(store, task, str(config.data))
    if config.loss == "mve" and task != "regression":
        raise ValueError(f"--loss mve (a mean and a variance per target) is for regression; "
                         f"{config.data}'s targets are all 0/1 ({task}): use --loss mse")
    smiles = store.smiles.head(len(store) if config.limit is None else min(config.limit, len(store)))
    if config.split_column is not None:
        split = column_split(store, config.split_column, len(smiles))
    else:
        split = split_indices(smiles, config.split, config.split_fractions,
                              config.seed if config.split_seed is None else config.split_seed,
                              store.targets, task)
    return Prepared(store=store, split=split, targets=list(store.target_names), task=task)


def network_config(c: TrainConfig, task: str) -> NetworkConfig:
    """The network the settings ``c`` describe, for ``task``."""
    return NetworkConfig(hidden=c.hidden, rings=c.rings, task=task, dtype=c.dtype,
                         aggregation=c.aggregation, dropout=c.dropout,
                         readout_features=c.readout_features, propagate=c.propagate,
                         loss=c.loss)


def make_items(prep: Prepared, rows: np.ndarray, size: int, rng, next_key: int):
    """``rows`` packed at once into a list of instances grouped by plan (benchmarks that
    time the pipeline without the packing); returns (items, {key: rows}, next_key)."""
    plan = epoch_plan(prep.store, rows, size, rng, next_key, chunk=max(len(rows), 1))
    items = list(plan.instances(prep.store))
    return items, {k: plan.rows_of(k) for k, _ in items}, plan.next_key


def _r2_left(y: np.ndarray, left: np.ndarray) -> float | None:
    """1 - var(left) / var(y) over y's known values (None without spread)."""
    ok = np.isfinite(y)
    var = float(np.var(y[ok])) if ok.sum() > 1 else 0.0
    return 1.0 - float(np.var(left[ok])) / var if var > 0 else None


def fit_scaling(config: TrainConfig, prep: Prepared, rows: np.ndarray) -> Scaling:
    """Target scaling (``config.target_scaling``) and, for regression, the additive baseline
    (``config.baseline``), fitted on ``rows`` (the training split); the baseline's summed
    atom features are read from the store ``SCALING_CHUNK`` molecules at a time, twice (the
    fit, then what it leaves)."""
    store = prep.store
    Y = store.targets[rows]
    atom_ref, baseline = None, {"kind": "none"}
    if config.baseline != "none" and prep.task == "regression":
        fit = AdditiveFit(store.atom_dim, len(prep.targets))
        for r, S in _summed(store, rows):
            fit.add(S, store.targets[r])
        atom_ref = fit.solve()
        F = np.concatenate([S @ atom_ref for _, S in _summed(store, rows)]) if len(rows) else \
            np.zeros((0, len(prep.targets)))
        # how much of each target the fit carries on the training split: near 1 for an
        # extensive property (a sum over atoms); auto keeps the fit only for those
        r2 = [_r2_left(Y[:, j], Y[:, j] - F[:, j]) for j in range(len(prep.targets))]
        used = np.array([config.baseline == "additive" or (v is not None and v >= EXTENSIVE_R2)
                         for v in r2], bool)
        atom_ref[:, ~used] = 0.0
        baseline = {"kind": config.baseline, "train_r2": dict(zip(prep.targets, r2)),
                    "used": [t for t, u in zip(prep.targets, used) if u]}
        left = Y - np.where(used, F, 0.0)
        if not used.any():
            atom_ref = None
    mean, std = target_scale(Y, prep.task, config.target_scaling)
    if atom_ref is not None:
        # a target the baseline fits exactly leaves float32 rounding: keep the scale above it
        mean, left_std = target_scale(left, prep.task, config.target_scaling)
        std = np.maximum(left_std, 1e-3 * std)
    return Scaling(mean, std, atom_ref, baseline)


def _summed(store, rows: np.ndarray, chunk: int | None = None):
    """(rows, summed atom features (n, d_v)) of ``rows``, ``chunk`` molecules at a time."""
    chunk = chunk or SCALING_CHUNK
    pages = PageBudget(store)
    for lo in range(0, len(rows), chunk):
        r = rows[lo:lo + chunk]
        inst = store.pack(r)
        LIVE.track(inst)
        yield r, instance_sums(inst)
        del inst
        pages.read(len(r))
    pages.release()


class Session:
    """One run's settings made into data, scaling, networks, optimizers and engines."""

    def __init__(self, config: TrainConfig, progress=None, prep: Prepared | None = None):
        self.config = config
        self.prep = prep if prep is not None else prepare(config, progress)
        self.scaling: Scaling | None = None
        self.transfer: dict | None = None     # what --from-model copied (network())

    @property
    def store(self):
        return self.prep.store

    @property
    def split(self) -> dict:
        return self.prep.split

    def fit_scaling(self, rows: np.ndarray | None = None) -> Scaling:
        """``fit_scaling`` on ``rows`` (default: the training split), kept for ``network``."""
        rows = self.split["train"] if rows is None else rows
        self.scaling = fit_scaling(self.config, self.prep, rows)
        return self.scaling

    def instance_size(self) -> int:
        """Molecules per instance: the setting, else by the training molecules' atoms."""
        return (self.config.molecules_per_instance
                or auto_instance_size(self.store.n_atoms[self.split["train"]]))

    def network_config(self) -> NetworkConfig:
        return network_config(self.config, self.prep.task)

    def network(self):
        """A new network initialized from the seed, built with the fitted scaling."""
        if self.scaling is None:
            raise RuntimeError("Session.fit_scaling() first: the network is built with it")
        s, c = self.scaling, self.config
        network = build_network(self.network_config(), self.store.atom_dim, self.store.bond_dim,
                                len(self.prep.targets), s.mean, s.std, c.seed, s.atom_ref)
        if c.from_model is not None:      # --from-model: its parameters where they fit
            from molpipe.training.transfer import start_from

            self.transfer = start_from(network, c.from_model, self.store, self.prep.targets)
            self.transfer["frozen"] = list(c.freeze)
        return network

    def optimizers(self, network) -> dict:
        """One Adam per stage, none for a stage ``--freeze`` names (checked against the
        network's stages first)."""
        from molpipe.training.transfer import check_freeze

        c = self.config
        check_freeze(network, c.freeze)
        return make_optimizers(network, c.lr, c.weight_decay, c.average, c.freeze)

    def engine(self, network, optimizers: dict, **overrides):
        """The engine of the settings' schedule (``overrides``: any ``make_engine`` keyword,
        e.g. ``schedule``, ``max_active_keys``, ``sync_group``, ``trace``, ``describe``,
        ``update_criterion="atoms:400"``, ``admission``, ``weight_prediction``)."""
        c = self.config
        placement = None
        if c.placement and overrides.get("schedule", c.schedule) != "reference":
            placement = parse_placement(c.placement, list(network.stages))
        kw = dict(schedule=c.schedule, max_active_keys=c.max_active_keys,
                  min_update_frequency=c.min_update_frequency, backend=c.backend,
                  trace=c.trace, weight_stashing=c.weight_stashing,
                  stall_timeout=c.stall_timeout, placement=placement,
                  on_nonfinite=c.on_nonfinite, update_criterion=c.update_criterion,
                  admission=c.admission, weight_prediction=c.weight_prediction,
                  layout=c.layout, replicas=c.replicas, exchange_every=c.exchange_every)
        kw.update(overrides)
        if kw["backend"] == "mpi":              # replicas over MPI pack from the store
            kw.setdefault("store", self.store)
        return make_engine(kw.pop("schedule"), network, optimizers, **kw)

    def items(self, rows: np.ndarray, rng, next_key: int, size: int | None = None):
        """``make_items`` of ``rows`` at the session's instance size."""
        return make_items(self.prep, rows, size or self.instance_size(), rng, next_key)

    def plan(self, rows: np.ndarray, rng, next_key: int, size: int | None = None) -> Plan:
        """``epoch_plan`` of ``rows`` at the session's instance size (indices only)."""
        return epoch_plan(self.store, rows, size or self.instance_size(), rng, next_key)


def evaluate_items(engine, items, members, prep: Prepared, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics per target and the predictions (in data units) of ``rows``."""
    res = engine.predict(items)
    store = prep.store
    P = gather_predictions(res.preds, {k: np.searchsorted(rows, r) for k, r in members.items()},
                           len(rows), len(prep.targets))
    return metrics_table(prep.task, prep.targets, store.targets[rows], P), P


def evaluate_plan(engine, prep: Prepared, plan: Plan, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """``evaluate_items`` streamed: metrics per target and predictions of ``rows``."""
    P = predict_plan(engine, prep.store, plan, rows, len(prep.targets))
    return metrics_table(prep.task, prep.targets, prep.store.targets[rows], P), P


def describe_keys(store, *plans: Plan):
    """``describe(key)``: the SMILES of an instance's first molecules, for error messages
    (the ``plans`` are looked up when an error names a key)."""
    def describe(key) -> str:
        for plan in plans:
            rows = plan.rows_of(key)
            if rows is not None:
                more = " …" if len(rows) > 4 else ""
                return ", ".join(store.smiles[int(i)] for i in rows[:4]) + more
        return ""
    return describe
