"""ReadoutStage's toolkit methods: vectors, atom_terms and atom_gradient agree with the
stage's own forward and backward, ignore dropout and leave the gradients alone."""

import numpy as np
import pytest

from molpipe.nn.readout import AGGREGATIONS, ReadoutStage

from .graphs import D_V, benzene_like, chain, instance, one_atom, salt

D_H, N_T = 4, 2


def setup(aggregation, dropout=0.0):
    rng = np.random.default_rng(1)
    stage = ReadoutStage.create(rng, D_H, 5, N_T, np.float64, aggregation, dropout, 0, D_V)
    for v in stage.params.values():
        v += 0.3 * rng.normal(size=v.shape)
    inst = instance([benzene_like(rng), chain(rng, 3), one_atom(rng), salt(rng)],
                    np.zeros((4, N_T)))
    x = {"H": rng.normal(size=(inst.n_atoms, D_H))}
    return stage, inst, x, rng


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
def test_terms_sum_to_vectors_and_vectors_give_y(aggregation):
    stage, inst, x, _ = setup(aggregation)
    h, Z, Y = stage.vectors(x, inst)
    T = stage.atom_terms(x, inst)
    S = np.zeros_like(h)
    np.add.at(S, inst.atom_mol, T)
    np.testing.assert_allclose(S, h, rtol=1e-12, atol=1e-14)
    p = stage.params
    np.testing.assert_allclose(Z, np.maximum(h @ p["W_1"] + p["b_1"], 0), rtol=1e-12)
    np.testing.assert_allclose(Y, Z @ p["W_2"] + p["b_2"], rtol=1e-12)
    np.testing.assert_allclose(Y, stage.forward(None, 0, x, inst, False)["Y"], rtol=1e-12)


@pytest.mark.parametrize("aggregation", ["mean+norm", "attention"])
def test_atom_gradient_is_the_backwards_dh_and_touches_no_grads(aggregation):
    stage, inst, x, rng = setup(aggregation)
    dY = rng.normal(size=(inst.n_mols, N_T))
    dH = stage.atom_gradient(x, inst, dY)
    assert all(not g.any() for g in stage.grads.values())
    stage.forward("k", 0, x, inst, True)
    want = stage.backward("k", 0, {"Y": dY}, inst)["H"]
    np.testing.assert_allclose(dH, want, rtol=1e-12, atol=1e-14)


def test_toolkit_methods_ignore_dropout():
    stage, inst, x, rng = setup("mean", dropout=0.5)
    _, _, Y = stage.vectors(x, inst)
    np.testing.assert_allclose(Y, stage.forward(None, 0, x, inst, False)["Y"], rtol=1e-12)
    assert not np.allclose(Y, stage.forward("k", 0, x, inst, True)["Y"])    # training drops
