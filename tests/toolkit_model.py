"""Untrained models with every parameter perturbed (biases and the additive baseline not
zero), saved as model directories: fast stand-ins for trained runs in the toolkit's tests."""

import numpy as np

from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FEATURIZER_VERSION
from molpipe.inference.predict import Predictor
from molpipe.io.model import save_model
from molpipe.nn.network import NetworkConfig, build_network

SMILES = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "ClC(Cl)Cl", "CCN(CC)CC", "C",
          "O=C(O)c1ccccc1OC(C)=O", "[Na+].[Cl-]"]
#: (SMILES, the start of the reason it fails)
BAD = [("C1CC", "unparsable"), ("C(C)(C)(C)(C)C", "bad valence"), ("", "empty")]


def model_dir(path, aggregation="mean+norm", task="regression", dtype="float64", hidden=8,
              targets=("a", "b"), seed=0):
    """A model directory of a random network whose every array is perturbed."""
    cfg = NetworkConfig(hidden=hidden, ffn=6, task=task, dtype=dtype, aggregation=aggregation,
                        seed=seed)
    n_t = len(targets)
    rng = np.random.default_rng(seed)
    network = build_network(cfg, ATOM_DIM, BOND_DIM, n_t, rng.normal(size=n_t),
                            rng.uniform(0.5, 2.0, n_t))
    state = network.state_dict()
    for k, v in state.items():
        if k.startswith("loss.") and k != "loss.atom_ref":
            continue
        if k == "loss.atom_ref" and task != "regression":
            continue
        state[k] = (v + 0.3 * rng.normal(size=v.shape)).astype(v.dtype)
    meta = {"atom_dim": ATOM_DIM, "bond_dim": BOND_DIM, "targets": list(targets), "task": task,
            "featurizer_version": FEATURIZER_VERSION, "min_rounds": 2, "max_rounds": 6}
    return save_model(path, cfg, state, meta)


def predictor(path, **kw) -> Predictor:
    return Predictor.load(model_dir(path, **kw))
