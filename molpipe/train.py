"""Training: data -> split -> network -> engine (reference, sync or async) -> run directory."""

from __future__ import annotations

import csv
import json
import platform
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path

import numpy as np

import molpipe
from molpipe.data.instance import group_by_plan, pack
from molpipe.engine import gather_predictions, make_engine, make_optimizers
from molpipe.metrics import metrics_table
from molpipe.model import save_model
from molpipe.nn.network import NetworkConfig, build_network
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
    min_rounds: int = 2
    max_rounds: int = 6
    rings: bool = True
    lr: float = 1e-3
    molecules_per_instance: int = 16
    schedule: str = "async"
    max_active_keys: int = 8
    min_update_frequency: int = 1
    backend: str = "thread"
    dtype: str = "float32"
    trace: bool = True                # record the last training epoch's pipeline timeline
    cache_root: str | None = None


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
    task = config.task or infer_task(store.targets)
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


def score(metrics: dict, task: str, std: np.ndarray) -> float:
    """One number to select on (lower is better): mean scaled RMSE, or minus mean AUC."""
    if task == "regression":
        return float(np.nanmean([m["rmse"] / s for m, s in zip(metrics.values(), std)]))
    return -float(np.nanmean([m["auc"] for m in metrics.values()]))


def versions() -> dict:
    import numba
    import rdkit

    return {"molpipe": molpipe.__version__, "numpy": np.__version__, "numba": numba.__version__,
            "rdkit": rdkit.__version__, "python": platform.python_version()}


def train(config: TrainConfig, out_dir: str | Path, progress=None) -> dict:
    """Train per ``config``, write the run directory ``out_dir``, return the report."""
    out_dir = Path(out_dir)
    t_start = time.perf_counter()
    emit = progress or (lambda event, **kw: None)
    prep = prepare(config, progress=progress)
    store, split = prep.store, prep.split
    need = np.concatenate([split["train"], split["val"], split["test"]])
    prep.graphs = dict(zip(need.tolist(), store.graphs(need)))

    Ytr = store.targets[split["train"]].astype(np.float64)
    mean = np.nan_to_num(np.nanmean(Ytr, axis=0)) if prep.task == "regression" else np.zeros(Ytr.shape[1])
    std = np.nanstd(Ytr, axis=0) if prep.task == "regression" else np.ones(Ytr.shape[1])
    std = np.where(np.isfinite(std) & (std > 0), std, 1.0)
    net_config = NetworkConfig(hidden=config.hidden, rings=config.rings, task=prep.task,
                               dtype=config.dtype)
    network = build_network(net_config, store.atom_dim, store.bond_dim, len(prep.targets),
                            mean, std, config.seed)
    optimizers = make_optimizers(network, config.lr)
    rng = np.random.default_rng(config.seed)
    size = config.molecules_per_instance
    val_items, val_members, key = make_items(prep, split["val"], size, None, 0)
    smiles = store.smiles

    def describe(k):
        rows = members.get(k, val_members.get(k))
        return "" if rows is None else ", ".join(smiles[i] for i in rows[:4]) + (" …" if len(rows) > 4 else "")

    members: dict = {}
    history, best, best_state, bad_epochs = [], float("inf"), network.state_dict(), 0
    n_train_mols, train_seconds = 0, 0.0
    emit("start", epochs=config.epochs, n_train=len(split["train"]), n_val=len(split["val"]),
         n_test=len(split["test"]), parameters=network.n_parameters)
    with make_engine(config.schedule, network, optimizers, max_active_keys=config.max_active_keys,
                     min_update_frequency=config.min_update_frequency, backend=config.backend,
                     trace=config.trace, describe=describe) as engine:
        for epoch in range(config.epochs):
            lr = lr_at(epoch, config.epochs, config.lr)
            for opt in optimizers.values():
                opt.lr = lr
            items, members, key = make_items(prep, split["train"], size, rng, key)
            res = engine.train(items, on_result=lambda k, loss, n: emit("instance", n=n, loss=loss))
            last_train = (res, getattr(engine, "trace", lambda: [])())
            n_train_mols += len(split["train"])
            train_seconds += res.seconds
            val_metrics, _ = evaluate_items(engine, val_items, val_members, prep, split["val"])
            val_score = score(val_metrics, prep.task, std)
            train_loss = float(np.mean(list(res.losses.values())))
            row = {"epoch": epoch + 1, "train_loss": train_loss, "val_score": val_score, "lr": lr,
                   "epoch_seconds": res.seconds, "wall_seconds": time.perf_counter() - t_start,
                   "train_molecules_per_second": len(split["train"]) / max(res.seconds, 1e-9),
                   **{f"val_{t}_{m}": v for t, ms in val_metrics.items() for m, v in ms.items()
                      if m != "n"}}
            history.append(row)
            if val_score < best:
                best, best_state, bad_epochs = val_score, network.state_dict(), 0
            else:
                bad_epochs += 1
            emit("epoch", utilization=res.utilization, **row)
            if bad_epochs >= config.patience:
                break
        network.load_state_dict(best_state)
        test_items, test_members, key = make_items(prep, split["test"], size, None, key)
        val_metrics, _ = evaluate_items(engine, val_items, val_members, prep, split["val"])
        test_metrics, P_test = evaluate_items(engine, test_items, test_members, prep, split["test"])
        utilization = last_train[0].utilization
        workers = getattr(engine, "worker_names", {})
        trace = {"entries": last_train[1], "wall": last_train[0].seconds, "workers": workers,
                 "utilization": utilization} if last_train[1] else None

    report = {
        "dataset": config.data,
        "targets": prep.targets,
        "task": prep.task,
        "split": config.split,
        "split_sizes": {k: int(len(v)) for k, v in split.items()},
        "seed": config.seed,
        "schedule": config.schedule,
        "epochs": len(history),
        "best_epoch": int(np.argmin([h["val_score"] for h in history])) + 1,
        "wall_seconds": time.perf_counter() - t_start,
        "train_seconds": train_seconds,
        "train_molecules_per_second": n_train_mols / max(train_seconds, 1e-9),
        "val": val_metrics,
        "test": test_metrics,
        "parameters": network.n_parameters,
        "utilization": utilization,
        "config": asdict(config),
        "versions": versions(),
    }
    write_run(out_dir, network, prep, report, history, split, P_test, trace)
    emit("done", report=report)
    return report


def write_run(out_dir: Path, network, prep: Prepared, report: dict, history: list, split: dict,
              P_test: np.ndarray, trace) -> None:
    """The run directory: model/, report.json, metrics.csv, split.json, predictions, trace."""
    out_dir.mkdir(parents=True, exist_ok=True)
    store = prep.store
    save_model(out_dir / "model", network, {
        "atom_dim": int(store.atom_dim), "bond_dim": int(store.bond_dim),
        "targets": prep.targets, "task": prep.task,
        "featurizer_version": store.meta.get("featurizer_version"),
        "min_rounds": store.meta.get("min_rounds"), "max_rounds": store.meta.get("max_rounds"),
    })
    (out_dir / "report.json").write_text(json.dumps(report, indent=2, default=float))
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
