"""Build an ``OnlineModel``: from a run directory, from a data set, or untrained from nothing.

Every path reads its settings from one ``TrainConfig`` (a run's ``settings.json``, the
data set's options, or ``DEFAULTS``); the pipeline is always the async schedule on threads,
with NaN/inf instances skipped rather than stopping the service.
"""

from __future__ import annotations

import dataclasses
from pathlib import Path

import numpy as np

from molpipe.inference.predict import Predictor
from molpipe.io.model import ModelError
from molpipe.nn.network import build_network
from molpipe.serve.online import OnlineModel
from molpipe.training.engines import make_engine, make_optimizers
from molpipe.training.settings import DEFAULTS, LEGACY, TrainConfig

#: a model trained to convergence is fine-tuned at the end of its schedule's rate: lr / 10
FINE_TUNE_LR = 0.1


def _engine(network, optimizers, config: TrainConfig):
    return make_engine("async", network, optimizers, max_active_keys=config.max_active_keys,
                       min_update_frequency=config.min_update_frequency,
                       weight_stashing=config.weight_stashing, on_nonfinite="skip",
                       stall_timeout=config.stall_timeout, trace=False)


def _model(network, config: TrainConfig, meta: dict, out, predictor=None, **kw) -> OnlineModel:
    optimizers = make_optimizers(network, config.lr, config.weight_decay, config.average)
    predictor = predictor or Predictor(network, {**meta, "_dir": str(out)})
    return OnlineModel(network, optimizers, predictor, _engine(network, optimizers, config), out,
                       meta=meta, seed=config.seed, settings=config.to_dict(), **kw)


def from_run(run_dir: str | Path, out: str | Path | None = None, lr: float | None = None,
             **kw) -> OnlineModel:
    """Serve (and go on training) the model of ``run_dir``; state in ``out`` (default
    ``run_dir/serve``; the run's own model/ is never written)."""
    predictor = Predictor.load(run_dir)
    run_dir = Path(run_dir)
    if getattr(predictor, "members", None):
        raise ModelError(f"{run_dir}: an ensemble; molpipe serve serves one model: pass one "
                         f"of its members (--model {run_dir / 'member-0'})")
    settings = run_dir / "settings.json"
    config = (TrainConfig.from_dict({**LEGACY, **_json(settings)}, str(settings))
              if settings.exists() else DEFAULTS)
    config = dataclasses.replace(config, lr=lr if lr is not None else config.lr * FINE_TUNE_LR)
    meta = {k: predictor.config.get(k) for k in ("atom_dim", "bond_dim", "targets", "task",
                                                 "featurizer_version", "min_rounds",
                                                 "max_rounds")}
    domain = predictor.domain.arrays() if predictor.domain is not None else None
    return _model(predictor.network, config, meta, out or run_dir / "serve", predictor,
                  domain_arrays=domain, **kw)


def from_data(config: TrainConfig, out: str | Path, **kw) -> OnlineModel:
    """Train from scratch on ``config.data`` (its training split replayed in epochs, its
    validation split scored after each) and serve from the first moment."""
    from molpipe.chem.domain import Domain
    from molpipe.training.run_dir import model_meta
    from molpipe.training.session import Session

    session = Session(config)
    session.fit_scaling()
    network = session.network()
    prep, split = session.prep, session.split
    train, val = split["train"].tolist(), split["val"]
    pool = (prep.store.graphs(train), prep.store.targets[split["train"]])
    model = _model(network, config, model_meta(prep), out, pool=pool,
                   domain_arrays=Domain.from_smiles(prep.store.smiles, config.seed,
                                                    rows=train).arrays(),
                   replay_epochs=kw.pop("replay_epochs", config.epochs),
                   lr_schedule=(config.lr, config.epochs), **kw)
    if len(val):
        Y = prep.store.targets[val].astype(np.float64)
        model.val = (model._instances(prep.store.graphs(val.tolist()), Y), Y)
    return model


def untrained(targets: list[str], task: str, out: str | Path,
              config: TrainConfig = DEFAULTS, **kw) -> OnlineModel:
    """A new model that learns only from what it observes; its target scale is fitted to
    the first rows observed."""
    from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION
    from molpipe.training.session import network_config

    n = len(targets)
    network = build_network(network_config(config, task), ATOM_DIM, BOND_DIM, n,
                            np.zeros(n), np.ones(n), config.seed)
    meta = {"atom_dim": ATOM_DIM, "bond_dim": BOND_DIM, "targets": list(targets), "task": task,
            "featurizer_version": FEATURIZER_VERSION, "min_rounds": config.min_rounds,
            "max_rounds": config.max_rounds}
    return _model(network, config, meta, out, fit_scaling=task == "regression", **kw)


def _json(path: Path) -> dict:
    import json

    return json.loads(path.read_text(encoding="utf-8"))
