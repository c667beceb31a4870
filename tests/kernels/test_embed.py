"""The embed kernel pair: Ea is the per-edge bond encodings summed at every atom; finite
differences for every parameter; no bond gradient, no bond update."""

import numpy as np
import pytest

from molpipe.kernels.embed import embed_bwd, embed_fwd

from .fd import check

PARAMS = ("W_v", "b_v", "W_e", "b_e")
DST = np.array([0, 2, 0, 1, 2, 0], np.int32)       # atom 3 has no incoming edge


def _case(rng, n_edges=6):
    shapes = {"V": (4, 3), "E": (n_edges, 2), "W_v": (3, 3), "b_v": (3,), "W_e": (2, 3), "b_e": (3,)}
    return {k: rng.normal(size=s) for k, s in shapes.items()}


def _fwd(a, dst=DST):
    return embed_fwd(a["V"], a["E"], dst, *(a[k] for k in PARAMS))


def test_ea_is_the_bond_encodings_summed_at_every_atom():
    rng = np.random.default_rng(7)
    a = _case(rng)
    for dtype in (np.float32, np.float64):
        a = {k: v.astype(dtype) for k, v in a.items()}
        n, H, Ea, B, deg = _fwd(a)
        assert n == 0 and Ea.dtype == dtype and Ea.shape == (4, 3)
        ref = np.zeros((4, 3))
        for e, t in enumerate(DST):
            ref[t] += a["E"][e] @ a["W_e"] + a["b_e"]
        np.testing.assert_allclose(Ea, ref, rtol=1e-5, atol=1e-5)
        assert not Ea[3].any() and not B[3].any() and deg[3] == 0
        np.testing.assert_array_equal(deg, [3, 1, 2, 0])
        np.testing.assert_allclose(H, np.tanh(a["V"] @ a["W_v"] + a["b_v"]), rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("wrt", PARAMS)
def test_embed_bwd_finite_differences(wrt):
    rng = np.random.default_rng(8)
    a = _case(rng)
    n, H, Ea, B, deg = _fwd(a)
    wH, wE = rng.normal(size=H.shape), rng.normal(size=Ea.shape)
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    assert n == 0 == embed_bwd(wH, wE, a["V"], B, deg, H, *(g[k] for k in PARAMS))

    def f():
        _, H, Ea, _, _ = _fwd(a)
        return np.concatenate([(wH * H).ravel(), (wE * Ea).ravel()])

    check(f, a[wrt], g[wrt], np.ones(H.size + Ea.size))


def test_without_a_bond_gradient_the_bond_encoder_gets_none():
    rng = np.random.default_rng(9)
    a = _case(rng)
    _, H, _, B, deg = _fwd(a)
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    embed_bwd(rng.normal(size=H.shape), H[:0], a["V"], B, deg, H, *(g[k] for k in PARAMS))
    assert np.abs(g["W_v"]).sum() > 0
    assert not g["W_e"].any() and not g["b_e"].any()


def test_counts_the_nonfinite_values_made_and_gathered():
    rng = np.random.default_rng(12)
    a = _case(rng)
    a["E"][1, 0] = np.nan                              # one bond's features
    n, H, Ea, B, deg = _fwd(a)
    assert n == np.count_nonzero(np.isnan(Ea)) > 0 and np.isfinite(H).all()
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    n = embed_bwd(np.ones_like(H), np.ones_like(Ea), a["V"], B, deg, H, *(g[k] for k in PARAMS))
    assert n == sum(np.count_nonzero(np.isnan(v)) for v in g.values()) > 0
