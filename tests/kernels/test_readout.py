"""The readout kernel pair: finite differences for H and every parameter, for every
aggregation's channels, with and without attention and dropout masks."""

import numpy as np
import pytest

from molpipe.kernels.readout import readout_bwd, readout_fwd
from molpipe.nn.readout import AGGREGATIONS, channel_scales, n_channels

from .fd import check

PARAMS = ("W_g", "U_g", "b_g", "W_j", "U_j", "b_j", "w_a", "W_1", "b_1", "W_2", "b_2")
ATOM_MOL = np.array([0, 0, 0, 1, 2, 2], np.int32)      # molecules of 3, 1 and 2 atoms


def arrays(rng, aggregation, d_h=3, d_ffn=4, n_targets=2, dropout=False, skip=False, d_v=5):
    k = n_channels(aggregation)
    attend = aggregation == "attention"
    d_x = d_v if skip else 0
    shapes = {"H": (6, d_h), "X": (6 if skip else 0, d_x), "W_g": (d_h, d_h), "U_g": (d_x, d_h),
              "b_g": (d_h,), "W_j": (d_h, d_h), "U_j": (d_x, d_h), "b_j": (d_h,),
              "w_a": (d_h if attend else 0, 1),
              "W_1": (k * d_h, d_ffn), "b_1": (d_ffn,), "W_2": (d_ffn, n_targets),
              "b_2": (n_targets,)}
    a = {name: rng.normal(size=s) for name, s in shapes.items()}
    a["b_1"] += 1.0                                       # most relu units active
    a["C"] = channel_scales(aggregation, ATOM_MOL, 3, np.dtype(np.float64))
    none = np.zeros((0, 0))
    if dropout:
        a["M_h"] = (rng.random((3, k * d_h)) > 0.3) / 0.7
        a["M_z"] = (rng.random((3, d_ffn)) > 0.3) / 0.7
    else:
        a["M_h"] = a["M_z"] = none
    return a


def forward(a):
    return readout_fwd(a["H"], a["X"], *(a[k] for k in PARAMS), ATOM_MOL, 3, a["C"], a["M_h"],
                       a["M_z"])


def backward(a, dY, saved):
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    n, dH = readout_bwd(dY, a["H"], a["X"], *saved, a["W_g"], a["W_j"], a["w_a"], a["W_1"],
                        a["W_2"], *(g[k] for k in PARAMS), ATOM_MOL, a["C"], a["M_h"], a["M_z"])
    return n, dH, g


@pytest.mark.parametrize("dropout, skip", [(False, False), (True, False), (False, True)])
@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("wrt", ("H",) + PARAMS)
def test_readout_bwd_finite_differences(wrt, aggregation, dropout, skip):
    if wrt == "w_a" and aggregation != "attention":
        pytest.skip("attention parameters exist with the attention aggregation only")
    if wrt in ("U_g", "U_j") and not skip:
        pytest.skip("the atom-feature weights exist with the skip only")
    rng = np.random.default_rng(6)
    a = arrays(rng, aggregation, dropout=dropout, skip=skip)
    n, Y, *saved = forward(a)
    assert n == 0
    w = rng.normal(size=Y.shape)
    n, dH, g = backward(a, w, saved)
    assert n == 0
    check(lambda: forward(a)[1], a[wrt], {"H": dH, **g}[wrt], w)


def test_skip_adds_the_atom_features_to_the_gates():
    rng = np.random.default_rng(9)
    a = arrays(rng, "mean", skip=True)
    G = forward(a)[2]
    ref = 1 / (1 + np.exp(-(a["H"] @ a["W_g"] + a["X"] @ a["U_g"] + a["b_g"])))
    np.testing.assert_allclose(G, ref, rtol=1e-12)


def _pooled(a):
    """h of the forward without the MLP's masks: the molecule vectors."""
    return forward(a)[5]


def test_channels_against_numpy():
    """mean, sum, norm and mean+norm are numpy's per-molecule sums, scaled."""
    rng = np.random.default_rng(7)
    a = arrays(rng, "sum")
    P = (1 / (1 + np.exp(-(a["H"] @ a["W_g"] + a["b_g"])))) * np.tanh(a["H"] @ a["W_j"] + a["b_j"])
    S = np.stack([P[ATOM_MOL == m].sum(axis=0) for m in range(3)])
    n_atoms = np.array([[3.0], [1.0], [2.0]])
    expect = {"sum": S, "mean": S / n_atoms, "norm": S / 100, "mean+norm": np.hstack([S / n_atoms, S / 100])}
    for aggregation, h in expect.items():
        b = {**a, "C": channel_scales(aggregation, ATOM_MOL, 3, np.dtype(np.float64)),
             "W_1": rng.normal(size=(h.shape[1], 4))}
        np.testing.assert_allclose(_pooled(b), h, rtol=1e-12)


def test_attention_weights_are_a_softmax_within_each_molecule():
    rng = np.random.default_rng(8)
    a = arrays(rng, "attention")
    alpha = forward(a)[4]
    e = (a["H"] @ a["w_a"])[:, 0]
    for m in range(3):
        em = np.exp(e[ATOM_MOL == m])
        np.testing.assert_allclose(alpha[ATOM_MOL == m], em / em.sum(), rtol=1e-12)
    # a one-atom molecule's weight is one, whatever its score
    assert alpha[3] == pytest.approx(1.0)


def test_counts_the_nonfinite_values_made_and_gathered():
    rng = np.random.default_rng(11)
    a = arrays(rng, "mean")
    a["W_2"][0, 0] = np.nan
    n, Y, *saved = forward(a)
    assert n == np.count_nonzero(~np.isfinite(Y)) > 0
    n, dH, g = backward(a, np.ones_like(Y), saved)
    assert n == sum(np.count_nonzero(~np.isfinite(x)) for x in (dH, *g.values())) > 0
