"""Predict with a trained model: ``Predictor`` turns SMILES or Mols into predictions (and,
for a model that keeps its training domain, how far each lies from it).

A molecule that cannot be featurized gets NaN predictions and its reason; every other one is
predicted, packed into instances of ``BATCH`` molecules grouped by plan. Files are streamed by
``molpipe.inference.files``.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Sequence
from pathlib import Path

import numpy as np

from molpipe.io.model import ModelError, load_domain, load_model

BATCH = 64          # molecules per instance
CHUNK = 1024        # rows featurized and predicted per task
#: progress callback: (rows done, estimated total rows)


class Predictor:
    """A loaded model that featurizes molecules as its training data was and predicts them.

    Fields
    ------
    network : the Network, its parameters loaded.
    config : the model's validated ``config.json``.
    targets : list[str] the model's targets, in the order of prediction columns.
    task : "regression" (predictions in data units) or "classification" (probabilities).
    domain : the training set's ``molpipe.chem.domain.Domain``, None for a model saved without it.
    """

    def __init__(self, network, config: dict, domain=None):
        from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION, V1_DIMS
        from molpipe.runtime.memory import keep_freed_memory

        keep_freed_memory()     # the forward's outputs reuse freed memory: 1.6x faster here

        version = config.get("featurizer_version")
        where = config.get('_dir', 'model')
        # version 2 appended columns to version 1's: a version-1 model reads their prefix
        dims = {"1": V1_DIMS, str(FEATURIZER_VERSION): (ATOM_DIM, BOND_DIM)}
        if version is not None and str(version) not in dims:
            raise ModelError(f"{where}: trained on featurizer version {version}, this molpipe "
                             f"reads versions {', '.join(dims)}; retrain the model")
        expect = dims[str(version)] if version is not None else (ATOM_DIM, BOND_DIM)
        if (config["atom_dim"], config["bond_dim"]) != expect:
            raise ModelError(f"{where}: the model expects "
                             f"{config['atom_dim']} atom / {config['bond_dim']} bond features, "
                             f"the featurizer makes {expect[0]} / {expect[1]}; retrain the model")
        self.dims = expect
        self.network = network
        self.config = config
        self.targets = list(config["targets"])
        self.task = config["task"]
        self.min_rounds = config.get("min_rounds") or 2
        self.max_rounds = config.get("max_rounds") or 6
        self.domain = domain
        scale = config.get("std_scale")            # --recalibrate: σ's factor per target
        if scale is not None and len(scale) != len(self.targets):
            raise ModelError(f"{where}: std_scale has {len(scale)} entries for "
                             f"{len(self.targets)} targets")
        self.std_scale = np.ones(len(self.targets)) if scale is None else np.asarray(scale, float)

    @classmethod
    def load(cls, run_dir: str | Path) -> "Predictor":
        """The model of a run directory (or a model directory); ModelError if it is not one.
        An ensemble's directory (``molpipe train --ensemble K``) gives its EnsemblePredictor."""
        from molpipe.inference.ensemble import ENSEMBLE, EnsemblePredictor

        run_dir = Path(run_dir)
        if (run_dir / ENSEMBLE).is_file():
            return EnsemblePredictor.load(run_dir)
        if not run_dir.exists():
            raise ModelError(f"{run_dir}: no such directory; pass a run directory written "
                             "by `molpipe train`")
        if not run_dir.is_dir():
            raise ModelError(f"{run_dir}: not a directory; pass a run directory written by "
                             "`molpipe train`")
        network, config = load_model(run_dir)
        return cls(network, config, load_domain(config))

    @property
    def run_dir(self) -> Path:
        """The run directory the model was trained into (its report.json and split.json)."""
        return Path(self.config["_dir"]).parent

    @property
    def has_std(self) -> bool:
        """True for a model that predicts its own SD (a mean-variance head, ``--loss mve``;
        an ensemble: its members' spread)."""
        return self.network.config.loss == "mve"

    def predict_instance(self, inst) -> tuple[np.ndarray, np.ndarray | None]:
        """(predictions, σ or None), both (n_mols, n_targets) in data units, of one packed
        instance."""
        inst = self.fit_features(inst)
        if self.has_std:
            P, S = self.network.predict_with_std(inst)
            return P, S * self.std_scale
        return self.network.predict(inst), None

    def featurize(self, item):
        """MolGraph of a SMILES or Mol (FeaturizationError with the reason if it fails)."""
        from molpipe.chem.featurize import FeaturizationError, featurize

        if isinstance(item, Exception):
            raise item
        if not isinstance(item, str) and not hasattr(item, "GetAtoms"):
            raise FeaturizationError(f"not a SMILES string ({type(item).__name__})")
        return featurize(item, min_rounds=self.min_rounds, max_rounds=self.max_rounds)

    def fit_features(self, inst):
        """``inst`` with the feature columns the model was trained on (a version-1 model
        reads the first columns of today's features)."""
        a, b = self.dims
        if inst.V.shape[1] == a and inst.E.shape[1] == b:
            return inst
        return dataclasses.replace(inst, V=np.ascontiguousarray(inst.V[:, :a]),
                                   E=np.ascontiguousarray(inst.E[:, :b]))

    def predict_graphs(self, graphs: Sequence, batch: int = BATCH) -> np.ndarray:
        """Predictions (n, n_targets) float64 of MolGraphs, packed ``batch`` per instance."""
        return self.predict_graphs_with_std(graphs, batch)[0]

    def predict_graphs_with_std(self, graphs: Sequence, batch: int = BATCH):
        """(P, S): predictions and their σ (n, n_targets) float64 of MolGraphs; S is None
        for a model without uncertainty."""
        from molpipe.data.instance import pack_by_plan

        P = np.full((len(graphs), len(self.targets)), np.nan)
        S = np.full_like(P, np.nan) if self.has_std else None
        if not graphs:
            return P, S
        for inst, rows in pack_by_plan(list(graphs), P, batch):
            P[rows], s = self.predict_instance(inst)
            if S is not None:
                S[rows] = s
        return P, S

    def predict(self, items: Sequence, batch: int = BATCH) -> tuple[np.ndarray, list[str]]:
        """Predict SMILES / Mols (or FeaturizationErrors standing for broken rows).

        Returns
        -------
        P : (n, n_targets) float64, NaN on rows that failed.
        errors : list of n strings, "" where the row was predicted, else the reason.
        """
        P, _, errors, _, _ = self._predict(items, batch, with_mols=False)
        return P, errors

    def predict_with_domain(self, items: Sequence, batch: int = BATCH):
        """``predict`` and, for a model that keeps its domain, each row's nearest training
        similarity (NaN on failed rows) and why it lies outside the domain ("" inside).

        Returns
        -------
        P, errors : as ``predict``.
        domain : None for a model without a domain, else (similarity (n,), reasons list).
        """
        P, _, errors, domain = self.predict_all(items, batch)
        return P, errors, domain

    def predict_all(self, items: Sequence, batch: int = BATCH, domain: bool = True):
        """(P, S, errors, domain): ``predict_with_domain`` and the predictions' σ (None for a
        model without uncertainty, NaN on failed rows); ``domain=False`` skips the domain
        check (domain None)."""
        check = domain and self.domain is not None
        P, S, errors, mols, graphs = self._predict(items, batch, with_mols=check)
        if not check:
            return P, S, errors, None
        return P, S, errors, self.domain.check(mols, graphs)

    def _predict(self, items: Sequence, batch: int, with_mols: bool):
        """(P, S, errors, mols, graphs): the Mol and MolGraph of every row (None where the row
        failed; mols None unless ``with_mols``)."""
        from molpipe.chem.featurize import parse_smiles

        n = len(items)
        graphs, kept, mols, errors = [], [], [], [""] * n
        for i, item in enumerate(items):
            try:
                if with_mols and isinstance(item, str):
                    item = parse_smiles(item)
                graphs.append(self.featurize(item))
            except Exception as err:            # every row is predicted or gets its reason
                errors[i] = str(err) or type(err).__name__
                continue
            kept.append(i)
            mols.append(item)
        P = np.full((n, len(self.targets)), np.nan)
        S = np.full_like(P, np.nan) if self.has_std else None
        kept = np.asarray(kept, np.int64)
        P[kept], s = self.predict_graphs_with_std(graphs, batch)
        if S is not None:
            S[kept] = s
        graph_of, mol_of = [None] * n, [None] * n
        for i, g, m in zip(kept.tolist(), graphs, mols):
            graph_of[i], mol_of[i] = g, m
        for i in kept[~np.isfinite(P[kept]).all(axis=1)].tolist():
            errors[i] = "prediction is not finite"      # a non-finite prediction fails too
            graph_of[i] = mol_of[i] = None
        return P, S, errors, mol_of if with_mols else None, graph_of


def predict_smiles(model: "str | Path | Predictor", smiles: Sequence[str]) -> tuple[np.ndarray, list[str]]:
    """Predictions (n, n_targets) and per-row error reasons ("" if fine) for SMILES strings."""
    predictor = model if isinstance(model, Predictor) else Predictor.load(model)
    from molpipe.kernels import one_blas_thread

    with one_blas_thread():
        return predictor.predict(list(smiles))
