"""The network on real featurized molecules (skipped until the featurizer lands)."""

import numpy as np
import pytest

from molpipe.data.instance import pack
from molpipe.nn.network import NetworkConfig, build_network

from ..kernels.fd import num_grad, rel_err

featurize = pytest.importorskip("molpipe.chem.featurize").featurize

SMILES = ["c1ccccc1", "c1ccc2ccccc2c1", "CC(=O)[O-].[Na+]", "C"]


@pytest.fixture(scope="module")
def inst():
    graphs = [featurize(s) for s in SMILES]
    Y = np.array([[1.0], [2.0], [np.nan], [0.5]], np.float32)
    return pack(graphs, Y)


def test_forward_backward_on_smiles(inst):
    g = inst
    network = build_network(NetworkConfig(hidden=16), g.V.shape[1], g.E.shape[1], 1)
    loss, pred = network.forward_backward(0, g)
    assert np.isfinite(loss) and pred.shape == (4, 1) and np.all(np.isfinite(pred))
    assert ("rings", 0) in network.path(g)


def test_gradient_on_smiles_finite_differences(inst):
    network = build_network(NetworkConfig(hidden=3, ffn=3, dtype="float64"), inst.V.shape[1],
                            inst.E.shape[1], 1, [1.0], [0.7])
    network.forward_backward(0, inst)
    for s, p in [("message", "W_m"), ("update", "U_h"), ("rings", "W_r"), ("readout", "W_g"), ("embed", "W_e")]:
        stage = network.stages[s]
        fd = num_grad(lambda: network.loss(inst), stage.params[p])
        assert np.linalg.norm(fd) > 0
        assert rel_err(stage.grads[p], fd) < 1e-6, f"{s}.{p}"
