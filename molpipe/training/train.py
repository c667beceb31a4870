"""Training: data -> split -> network -> engine (reference, sync or async) -> run directory."""

from __future__ import annotations

import csv
import hashlib
import json
import os
import platform
import shutil
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import molpipe
from molpipe.data.build import REJECTED_CELLS
from molpipe.data.checks import check_labels, check_split, check_targets, target_warnings
from molpipe.data.instance import auto_instance_size, group_by_plan, pack
from molpipe.data.scaling import additive_baseline, summed_features, target_scale
from molpipe.training.result import EpochResult
from molpipe.training.engines import gather_predictions, make_engine, make_optimizers
from molpipe.training.metrics import metrics_table, summary
from molpipe.chem.domain import Domain
from molpipe.io.model import save_model
from molpipe.nn.optim import averaged_weights
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.runtime.nonfinite import NonFiniteError
from molpipe.runtime.placement import parse_placement
from molpipe.runtime.trace import write_trace


@dataclass
class TrainConfig:
    """Everything that decides a training run (written to report.json)."""

    data: str = "esol"
    targets: list[str] | None = None
    smiles_column: str | None = None
    task: str | None = None
    split: str = "random"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    limit: int | None = None          # use only the first N molecules of the data set
    seed: int = 0
    epochs: int = 50
    patience: int = 20
    hidden: int = 128
    aggregation: str = "mean+norm"    # readout over atoms: mean, sum, norm, attention, mean+norm
    dropout: float = 0.0              # readout MLP dropout
    readout_features: bool = True     # the readout reads the atoms' input features too
    propagate: str = "split"          # rounds over atoms ("split": message, update stages) or
                                      # over directed bonds ("bond", D-MPNN style)
    weight_decay: float = 0.0         # L2 on every parameter (Adam)
    average: float = 0.0              # decay of each stage's parameter average (0: none); the
                                      # averages are what is evaluated and saved
    target_scaling: str = "standard"  # regression targets: "standard" (mean, SD) or "robust"
    baseline: str = "auto"            # regression: "additive" (a least-squares fit to summed
                                      # atom features the network corrects), "none", or
                                      # "auto": additive for the targets it carries >= 90 % of
    min_rounds: int = 2
    max_rounds: int = 6
    rings: bool = True
    lr: float = 1e-3
    molecules_per_instance: int | None = None   # None: auto_instance_size (atoms per instance)
    schedule: str = "async"
    max_active_keys: int = 4           # measured default: benchmarks/README.md (sweep)
    min_update_frequency: int = 1
    weight_stashing: bool = True      # async: backward with the weights the forward used
    backend: str = "thread"
    placement: str | None = None      # "embed,message/update,..." (default: a worker per stage)
    dtype: str = "float32"
    track_test: bool = False          # also score the test split every epoch (benchmarks)
    checkpoint_minutes: float | None = None  # also checkpoint within an epoch this often
    trace: bool = True                # record the last training epoch's pipeline timeline
    stall_timeout: float = 300.0      # seconds without any pipeline message before giving up
    on_nonfinite: str = "stop"        # NaN/inf loss, activations or gradients: "stop" the run
                                      # or "skip" the instance (never saved into a checkpoint
                                      # or model)
    cache_root: str | None = None

    def __post_init__(self):
        from molpipe.training.settings import check_settings

        check_settings(self)


#: auto baseline: a target is extensive when the additive fit carries this share of its
#: training variance (QM9 u0 1.000, cv 0.97; ESOL 0.78, FreeSolv 0.84, gap 0.73)
EXTENSIVE_R2 = 0.9

#: what a checkpoint written before a setting existed meant by leaving it out
LEGACY = {"aggregation": "mean", "baseline": "none"}


@dataclass
class Prepared:
    """A data set made ready for training: store, split, graphs and fixed eval instances."""

    store: object
    split: dict
    targets: list[str]
    task: str
    graphs: dict = field(default_factory=dict)


def lr_at(epoch: int, epochs: int, lr: float) -> float:
    """Warm up over 2 epochs from lr/10, then decay exponentially to lr/10 at the end."""
    warm = min(2, max(epochs - 1, 1))
    if epoch < warm:
        return lr * (0.1 + 0.9 * epoch / warm)
    frac = (epoch - warm) / max(epochs - 1 - warm, 1)
    return lr * (0.1 ** frac)


def split_indices(smiles: list[str], how: str, fractions, seed: int) -> dict:
    """{'train','val','test'} -> sorted indices into ``smiles``: random, scaffold or a JSON file."""
    from molpipe.data import splits

    if how == "random":
        parts = splits.random_split(len(smiles), fractions, seed)
    elif how == "scaffold":
        parts = splits.scaffold_split(smiles, fractions, seed)
    else:
        parts = splits.split_from_file(how)
    return {name: np.asarray(p, dtype=np.int64) for name, p in zip(("train", "val", "test"), parts)}


def prepare(config: TrainConfig, progress=None) -> Prepared:
    """Open (preprocessing once) the data set and split it."""
    from molpipe.data.store import open_data

    emit = progress or (lambda event, **kw: None)
    store = open_data(config.data, targets=config.targets, smiles_column=config.smiles_column,
                      cache_root=config.cache_root,
                      progress=lambda done, total: emit("preprocess", done=done, total=total),
                      min_rounds=config.min_rounds, max_rounds=config.max_rounds)
    check_targets(store, str(config.data))
    task = config.task or infer_task(store.targets)
    check_labels(store, task, str(config.data))
    smiles = store.smiles if config.limit is None else store.smiles[: config.limit]
    split = split_indices(smiles, config.split, config.split_fractions, config.seed)
    return Prepared(store=store, split=split, targets=list(store.target_names), task=task)


def infer_task(Y: np.ndarray) -> str:
    """Classification when every known target is 0 or 1, else regression."""
    known = Y[np.isfinite(Y)]
    return "classification" if known.size and np.isin(known, (0.0, 1.0)).all() else "regression"


def make_items(prep: Prepared, rows: np.ndarray, size: int, rng, next_key: int):
    """Pack ``rows`` into instances grouped by plan; returns (items, {key: rows}, next_key)."""
    store = prep.store
    groups = group_by_plan(store.n_rounds[rows], store.has_rings[rows], size, rng)
    items, members = [], {}
    for g in groups:
        r = rows[g]
        inst = pack([prep.graphs[i] for i in r], store.targets[r], rows=r)
        items.append((next_key, inst))
        members[next_key] = r
        next_key += 1
    return items, members, next_key


def evaluate_items(engine, items, members, prep: Prepared, rows: np.ndarray) -> tuple[dict, np.ndarray]:
    """Metrics per target and the predictions (in data units) of ``rows``."""
    res = engine.predict(items)
    store = prep.store
    P = gather_predictions(res.preds, {k: np.searchsorted(rows, r) for k, r in members.items()},
                           len(rows), len(prep.targets))
    return metrics_table(prep.task, prep.targets, store.targets[rows], P), P


def _r2_left(y: np.ndarray, left: np.ndarray) -> float | None:
    """1 - var(left) / var(y) over y's known values (None without spread)."""
    ok = np.isfinite(y)
    var = float(np.var(y[ok])) if ok.sum() > 1 else 0.0
    return 1.0 - float(np.var(left[ok])) / var if var > 0 else None


def score(metrics: dict, task: str, std: np.ndarray) -> float:
    """One number to select on (lower is better): mean scaled RMSE, or minus mean AUC
    (tasks with one class left out); NaN when no target has a value."""
    if task == "regression":
        v = np.array([m["rmse"] / s for m, s in zip(metrics.values(), std)])
    else:
        v = -np.array([m["auc"] for m in metrics.values()])
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def versions() -> dict:
    import numba
    import rdkit

    return {"molpipe": molpipe.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "rdkit": rdkit.__version__, "python": platform.python_version()}


def _describe(store, *member_maps):
    """``describe(key)``: the SMILES of an instance's first molecules, for error messages."""
    def describe(key) -> str:
        for members in member_maps:
            rows = members.get(key)
            if rows is not None:
                more = " …" if len(rows) > 4 else ""
                return ", ".join(store.smiles[i] for i in rows[:4]) + more
        return ""
    return describe


def _state_arrays(network, optimizers: dict, best_state: dict) -> tuple[dict, dict]:
    """Checkpoint content: arrays (parameters, best parameters, optimizer slots) + scalars."""
    arrays = {f"net/{k}": v for k, v in network.state_dict().items()}
    arrays.update({f"best/{k}": v for k, v in best_state.items()})
    scalars = {}
    for name, opt in optimizers.items():
        for k, v in opt.state_dict().items():
            if isinstance(v, np.ndarray):
                arrays[f"opt/{name}/{k}"] = v
            else:
                scalars.setdefault(name, {})[k] = v
    return arrays, scalars


def _restore(arrays: dict, scalars: dict, network, optimizers: dict) -> dict:
    """Load a checkpoint's arrays into ``network`` and ``optimizers``; return the best state."""
    network.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("net/")})
    for name, opt in optimizers.items():
        prefix = f"opt/{name}/"
        opt.load_state_dict({**scalars.get(name, {}),
                             **{k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}})
    return network.upgrade_state({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})


def train(config: TrainConfig, out_dir: str | Path, progress=None, resume: bool = False) -> dict:
    """Train per ``config``, write the run directory ``out_dir``, return the report.

    A checkpoint is written after every epoch; with ``resume`` the run continues from the
    newest valid checkpoint in ``out_dir`` (its own config, data order and optimizer state).
    """
    from molpipe.io.checkpoint import load_checkpoint, save_checkpoint

    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    emit = progress or (lambda event, **kw: None)
    ckpt = None
    if resume:
        state, arrays, path = load_checkpoint(out_dir)
        config = TrainConfig(**{**LEGACY, **state["config"],
                                "split_fractions": tuple(state["config"]["split_fractions"])})
        ckpt = (state, arrays)
        emit("preprocess", message=f"resuming from {path}")
    if config.backend == "mpi":   # MPI: ranks > 0 serve rank 0's workers until it is done
        from molpipe.runtime.mpi_rank import serve_unless_control

        if serve_unless_control():
            return {}
    prep = prepare(config, progress=progress)
    store, split = prep.store, prep.split
    warnings = keep_rejects(store, out_dir, str(config.data))
    warnings += check_split(split, sum(len(v) for v in split.values()), str(config.data),
                            asked=config.split not in ("random", "scaffold"))
    warnings += target_warnings(store, split["train"], prep.task, out_dir / REJECTED_CELLS)
    for message in warnings:
        emit("warning", message=message)
    has_val = len(split["val"]) > 0
    need = np.concatenate([split["train"], split["val"], split["test"]])
    prep.graphs = dict(zip(need.tolist(), store.graphs(need)))

    Y_train = store.targets[split["train"]]
    atom_ref, baseline = None, {"kind": "none"}
    if config.baseline != "none" and prep.task == "regression":
        S_train = summed_features(prep.graphs[i] for i in split["train"].tolist())
        atom_ref = additive_baseline(S_train, Y_train, prep.task)
        # how much of each target the fit carries on the training split: near 1 for an
        # extensive property (a sum over atoms); auto keeps the fit only for those
        r2 = [_r2_left(Y_train[:, j], Y_train[:, j] - S_train @ atom_ref[:, j])
              for j in range(len(prep.targets))]
        used = [config.baseline == "additive" or (v is not None and v >= EXTENSIVE_R2)
                for v in r2]
        atom_ref[:, ~np.array(used, bool)] = 0.0
        baseline = {"kind": config.baseline, "train_r2": dict(zip(prep.targets, r2)),
                    "used": [t for t, u in zip(prep.targets, used) if u]}
        left = Y_train - S_train @ atom_ref
        if not any(used):
            atom_ref = None
    mean, std = target_scale(Y_train, prep.task, config.target_scaling)
    if atom_ref is not None:
        # a target the baseline fits exactly leaves float32 rounding: keep the scale above it
        mean, left_std = target_scale(left, prep.task, config.target_scaling)
        std = np.maximum(left_std, 1e-3 * std)
    net_config = NetworkConfig(hidden=config.hidden, rings=config.rings, task=prep.task,
                               dtype=config.dtype, aggregation=config.aggregation,
                               dropout=config.dropout, readout_features=config.readout_features,
                               propagate=config.propagate)
    network = build_network(net_config, store.atom_dim, store.bond_dim, len(prep.targets),
                            mean, std, config.seed, atom_ref)
    optimizers = make_optimizers(network, config.lr, config.weight_decay, config.average)
    rng = np.random.default_rng(config.seed)
    size = config.molecules_per_instance or auto_instance_size(store.n_atoms[split["train"]])
    val_items, val_members, key = make_items(prep, split["val"], size, None, 0)
    test_items, test_members, key = make_items(prep, split["test"], size, None, key)
    members: dict = {}
    partial = None
    history, best, best_state, bad_epochs = [], float("inf"), network.state_dict(), 0
    n_train_mols, train_seconds, first_epoch = 0, 0.0, 0
    if ckpt is not None:
        state, arrays = ckpt
        best_state = _restore(arrays, state["optimizers"], network, optimizers)
        rng.bit_generator.state = state["rng"]
        history, best, bad_epochs = state["history"], state["best"], state["bad_epochs"]
        n_train_mols, train_seconds, key = state["n_train_mols"], state["train_seconds"], state["key"]
        first_epoch = state["epoch"]
        partial = state.get("partial")
    meta = _model_meta(prep)
    all_smiles = store.smiles
    domain = Domain.from_smiles([all_smiles[i] for i in split["train"].tolist()],
                                config.seed).arrays()
    if ckpt is not None and np.isfinite(best):
        # a kill between writing model/ and the checkpoint (or during model/'s swap) left
        # model/ newer than the checkpoint, or absent: rewrite it from the checkpoint
        save_model(out_dir / "model", network.config, best_state, meta, domain)
    if not kernels_cached():
        emit("preprocess", message="compiling kernels (first run only)…")
    emit("start", epochs=config.epochs, n_train=len(split["train"]), n_val=len(split["val"]),
         n_test=len(split["test"]), parameters=network.n_parameters, first_epoch=first_epoch,
         task=prep.task, aggregation=network.config.aggregation, baseline=baseline,
         units=target_units(config.data, prep.targets))
    last_train = None
    stop = bad_epochs >= config.patience
    placement = parse_placement(config.placement, list(network.stages)) if config.placement else None
    with make_engine(config.schedule, network, optimizers, max_active_keys=config.max_active_keys,
                     min_update_frequency=config.min_update_frequency, backend=config.backend,
                     trace=config.trace, describe=_describe(store, members, val_members),
                     weight_stashing=config.weight_stashing,
                     stall_timeout=config.stall_timeout, placement=placement,
                     on_nonfinite=config.on_nonfinite) as engine:
        for epoch in range(first_epoch, config.epochs if not stop else first_epoch):
            lr = lr_at(epoch, config.epochs, config.lr)
            for opt in optimizers.values():
                opt.lr = lr
            if partial is not None:           # resuming inside this epoch: the same instances
                rng.bit_generator.state, key = partial["rng"], partial["key"]
            epoch_start = {"rng": rng.bit_generator.state, "key": key}
            items, epoch_members, key = make_items(prep, split["train"], size, rng, key)
            members.clear()
            members.update(epoch_members)

            def save_partial(position: int, done: EpochResult, epoch=epoch) -> None:
                arrays, scalars = _state_arrays(network, optimizers, best_state)
                _require_finite(arrays, f"epoch {epoch + 1}: checkpoint array")
                save_checkpoint(out_dir, epoch, {
                    "epoch": epoch, "config": asdict(config), "rng": rng.bit_generator.state,
                    "history": history, "best": best, "bad_epochs": bad_epochs, "key": key,
                    "n_train_mols": n_train_mols, "train_seconds": train_seconds,
                    "optimizers": scalars, "partial": {
                        **epoch_start, "position": position, "seconds": done.seconds,
                        "losses": {str(k): v for k, v in done.losses.items()},
                        "skipped": {str(k): v for k, v in done.skipped.items()}}},
                    arrays, part=position)

            res = _train_epoch(engine, items, partial, config, save_partial,
                               on_result=lambda k, loss, n: emit("instance", n=n, loss=loss))
            partial = None
            last_train = res
            seen = _account_rows(epoch + 1, items, epoch_members, res, split["train"])
            _require_finite(network.state_dict(), f"epoch {epoch + 1}: after training, parameter")
            if res.skipped:
                emit("skipped", epoch=epoch + 1, n=len(res.skipped),
                     message="; ".join(f"key {k} [{_describe(store, epoch_members)(k)}]: {why}"
                                       for k, why in list(res.skipped.items())[:5]))
            n_train_mols += len(split["train"])
            train_seconds += res.seconds
            with averaged_weights(network.stages, optimizers):   # evaluated and kept: averages
                val_metrics, _ = evaluate_items(engine, val_items, val_members, prep, split["val"])
                test_metrics = (evaluate_items(engine, test_items, test_members, prep,
                                               split["test"])[0] if config.track_test else {})
                current = network.state_dict()
            val_score = score(val_metrics, prep.task, std) if has_val else float("nan")
            row = {"epoch": epoch + 1, "train_loss": _mean_finite(res.losses.values()),
                   "val_score": val_score, "lr": lr,
                   "epoch_seconds": res.seconds, "wall_seconds": time.perf_counter() - t_start,
                   "train_molecules_per_second": len(split["train"]) / max(res.seconds, 1e-9),
                   **seen,
                   **{f"val_{t}_{m}": v for t, ms in val_metrics.items() for m, v in ms.items()
                      if m != "n"}}
            row.update({f"test_{t}_{m}": v for t, ms in test_metrics.items()
                        for m, v in ms.items() if m != "n"})
            history.append(row)
            if val_score < best or not has_val:      # no validation: keep the last epoch
                best, best_state, bad_epochs = val_score if has_val else -1.0, current, 0
                _require_finite(best_state, f"epoch {epoch + 1}: model parameter")
                save_model(out_dir / "model", network.config, best_state, meta, domain)
            else:
                bad_epochs += 1
            arrays, scalars = _state_arrays(network, optimizers, best_state)
            _require_finite(arrays, f"epoch {epoch + 1}: checkpoint array")
            save_checkpoint(out_dir, epoch + 1, {
                "epoch": epoch + 1, "config": asdict(config), "rng": rng.bit_generator.state,
                "history": history, "best": best, "bad_epochs": bad_epochs, "key": key,
                "n_train_mols": n_train_mols, "train_seconds": train_seconds,
                "optimizers": scalars}, arrays)
            emit("epoch", utilization=res.utilization, in_flight_max=res.in_flight_max,
                 val_summary=summary(prep.task, val_metrics) if has_val else {}, **row)
            if bad_epochs >= config.patience:
                if epoch + 1 < config.epochs:
                    emit("stopped", epoch=epoch + 1, patience=config.patience,
                         best_epoch=_best_epoch(history))
                break
        network.load_state_dict(best_state)
        val_metrics, _ = evaluate_items(engine, val_items, val_members, prep, split["val"])
        test_metrics, P_test = evaluate_items(engine, test_items, test_members, prep, split["test"])
        utilization = last_train.utilization if last_train else {}
        entries = getattr(engine, "trace", lambda: [])() if last_train else []
        trace = None
        if entries:
            trace = {"entries": entries, "wall": last_train.seconds,
                     "workers": getattr(engine, "worker_names", {}), "utilization": utilization}

    report = {
        "dataset": config.data,
        "targets": prep.targets,
        "task": prep.task,
        "split": config.split,
        "split_sizes": {k: int(len(v)) for k, v in split.items()},
        "seed": config.seed,
        "schedule": config.schedule,
        "epochs": len(history),
        "best_epoch": _best_epoch(history),
        "wall_seconds": time.perf_counter() - t_start,
        "train_seconds": train_seconds,
        "train_molecules_per_second": n_train_mols / max(train_seconds, 1e-9),
        "val": val_metrics,
        "test": test_metrics,
        "val_summary": summary(prep.task, val_metrics),
        "test_summary": summary(prep.task, test_metrics),
        "network": network.config.to_dict(),
        "baseline": baseline,
        "units": target_units(config.data, prep.targets),
        "warnings": warnings,
        "targets_not_numbers": store.targets_not_numbers,
        "parameters": network.n_parameters,
        "molecules_per_instance": size,
        "utilization": utilization,
        # each worker thread's CPU seconds over wall seconds in the last training epoch
        "worker_cpu": last_train.cpu if last_train else {},
        "resumed_from_epoch": first_epoch if resume else None,
        "skipped_instances": sum(h.get("skipped_instances", 0) for h in history),
        # bit-for-bit parameters from a seed: reference, sync, and async with one instance in
        # flight; the data order (instance contents per epoch) always
        # (tests/test_faults.py::test_reproducible_*)
        "reproducible": {"parameters": config.schedule != "async" or config.max_active_keys == 1,
                         "data_order": True},
        "config": asdict(config),
        "versions": versions(),
    }
    write_run(out_dir, network, prep, report, history, split, P_test, trace, meta, domain)
    emit("done", report=report)
    return report


def _best_epoch(history: list) -> int:
    """1-based epoch of the best validation score; the last epoch when none was scored."""
    scores = np.array([h["val_score"] for h in history], np.float64)
    return int(np.nanargmin(scores)) + 1 if np.isfinite(scores).any() else len(history)


def _digest(rows: np.ndarray) -> str:
    return hashlib.sha256(np.ascontiguousarray(rows, dtype=np.int64).tobytes()).hexdigest()[:16]


def _train_epoch(engine, items: list, partial: dict | None, config: TrainConfig, save_partial,
                 on_result=None) -> EpochResult:
    """Train on ``items``; with ``checkpoint_minutes``, in chunks with checkpoints between.

    Chunks are whole groups of ``max_active_keys`` instances, so the sync schedule's updates
    fall where they would without chunks; a resumed ``partial`` epoch skips the instances
    it had already trained on and keeps their losses.
    """
    done = EpochResult()
    start = 0
    if partial is not None:
        start = partial["position"]
        done.losses = {int(k): v for k, v in partial["losses"].items()}
        done.skipped = {int(k): v for k, v in partial["skipped"].items()}
        done.seconds = partial["seconds"]
    every = config.checkpoint_minutes
    chunk = len(items) if not every else max(config.max_active_keys, 1) * 8
    last_save = time.perf_counter()
    for lo in range(start, len(items), chunk):
        res = engine.train(items[lo:lo + chunk], on_result=on_result)
        done.losses.update(res.losses)
        done.preds.update(res.preds)
        done.skipped.update(res.skipped)
        done.seconds += res.seconds
        done.utilization, done.cpu = res.utilization, res.cpu
        done.in_flight_max = max(done.in_flight_max, res.in_flight_max)
        if every and lo + chunk < len(items) and time.perf_counter() - last_save >= 60 * every:
            save_partial(lo + chunk, done)
            last_save = time.perf_counter()
    return done


def _account_rows(epoch: int, items, members: dict, res, train_rows: np.ndarray) -> dict:
    """Check every training row was trained on (or skipped) exactly once this epoch.

    Returns the metrics columns: ``rows_seen`` (rows trained on), ``rows_digest`` (of their
    sorted indices), ``data_order`` (digest of the rows in the order instances were
    admitted: the epoch's data order) and ``skipped_instances``.
    """
    done = [k for k, _ in items if k in res.losses]
    if len(done) != len(items) or len(res.losses) != len(items):
        raise RuntimeError(f"epoch {epoch}: {len(res.losses)} instances returned, "
                           f"{len(items)} admitted")
    every = np.sort(np.concatenate([members[k] for k, _ in items]))
    if not np.array_equal(every, np.sort(train_rows)):
        raise RuntimeError(f"epoch {epoch}: the instances do not cover the training rows once each")
    kept = [members[k] for k, _ in items if k not in res.skipped]
    seen = np.sort(np.concatenate(kept)) if kept else np.zeros(0, np.int64)
    return {"rows_seen": int(seen.size), "rows_digest": _digest(seen),
            "data_order": _digest(np.concatenate([members[k] for k, _ in items])),
            "skipped_instances": len(res.skipped)}


def _mean_finite(values) -> float:
    v = np.asarray(list(values), dtype=np.float64)
    v = v[np.isfinite(v)]
    return float(v.mean()) if v.size else float("nan")


def _require_finite(arrays: dict, what: str) -> None:
    """NonFiniteError naming the first array holding NaN/inf: nothing poisoned is saved."""
    for k, a in arrays.items():
        if a.dtype.kind in "fc" and not np.isfinite(a).all():
            raise NonFiniteError(f"{what} {k!r} holds {int(np.isnan(a).sum())} NaN and "
                                 f"{int(np.isinf(a).sum())} inf values; nothing saved "
                                 "(the last checkpoint stays as it was)")


def _model_meta(prep: Prepared) -> dict:
    store = prep.store
    return {"atom_dim": int(store.atom_dim), "bond_dim": int(store.bond_dim),
            "targets": prep.targets, "task": prep.task,
            "featurizer_version": store.meta.get("featurizer_version"),
            "min_rounds": store.meta.get("min_rounds"), "max_rounds": store.meta.get("max_rounds")}


def target_units(data, targets: list[str]) -> dict[str, str]:
    """{target: unit} of a bundled data set's manifest ({} for a file of one's own)."""
    from molpipe.data.registry import find_by_path, get_dataset, is_dataset_name

    entry = get_dataset(str(data)) if is_dataset_name(str(data)) else find_by_path(data)
    units = getattr(entry, "units", None) or {}
    return {t: units[t] for t in targets if units.get(t)}


def kernels_cached() -> bool:
    """Whether numba has compiled molpipe's kernels into its on-disk cache before."""
    from molpipe import kernels

    root = Path(os.environ.get("NUMBA_CACHE_DIR") or Path(kernels.__file__).parent / "__pycache__")
    return root.exists() and any(root.rglob("*.nbi"))


def keep_rejects(store, out_dir: Path, source: str) -> list[str]:
    """Copy the store's rejects (rows that are not molecules) and rejected cells (targets that
    are not numbers) into the run directory; a warning for rejected rows (target_warnings
    speaks of the cells)."""
    from molpipe.data.build import REJECTS

    out = []
    n_rows = int(store.meta.get("rows_rejected") or 0)
    n_cells = sum(f["count"] for f in store.targets_not_numbers.values())
    for name, n, what in ((REJECTS, n_rows, "rows"), (REJECTED_CELLS, n_cells, "cells")):
        if n and (store.path / name).exists():
            out_dir.mkdir(parents=True, exist_ok=True)
            shutil.copyfile(store.path / name, out_dir / name)
            if what == "rows":
                out.append(f"{source}: {n} of {store.meta.get('rows_read', '?')} rows are not "
                           f"molecules RDKit reads; left out, listed with the reason in "
                           f"{out_dir / name}")
    return out


def write_run(out_dir: Path, network, prep: Prepared, report: dict, history: list, split: dict,
              P_test: np.ndarray, trace, meta: dict, domain: dict | None = None) -> None:
    """The run directory: model/, report.json, metrics.csv, split.json, predictions, trace."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = prep.store
    save_model(out_dir / "model", network.config, network.state_dict(), meta, domain)
    (out_dir / "split.json").write_text(json.dumps({k: v.tolist() for k, v in split.items()}))
    with open(out_dir / "metrics.csv", "w", newline="") as f:
        w = csv.DictWriter(f, fieldnames=list(history[0]))
        w.writeheader()
        w.writerows(history)
    with open(out_dir / "test_predictions.csv", "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["row", "smiles", *prep.targets, *(f"pred_{t}" for t in prep.targets)])
        for i, r in enumerate(split["test"]):
            w.writerow([int(store.source_row[r]), store.smiles[r], *store.targets[r].tolist(),
                        *P_test[i].tolist()])
    if trace is not None:
        write_trace(out_dir / "trace.json", trace["entries"], util=trace["utilization"],
                    wall=trace["wall"])
        doc = json.loads((out_dir / "trace.json").read_text())
        doc["workers"] = {str(k): v for k, v in trace["workers"].items()}
        (out_dir / "trace.json").write_text(json.dumps(doc))
    # report.json last, by rename: its presence means the run directory is complete
    tmp = out_dir / "report.json.tmp"
    tmp.write_text(json.dumps(report, indent=2, default=float))
    os.replace(tmp, out_dir / "report.json")
