"""The embed kernel pair: finite differences for every parameter; no bond gradient, no bond update."""

import numpy as np
import pytest

from molpipe.kernels.embed import embed_bwd, embed_fwd

from .fd import check

PARAMS = ("W_v", "b_v", "W_e", "b_e")


def _case(rng, n_edges=5):
    shapes = {"V": (4, 3), "E": (n_edges, 2), "W_v": (3, 3), "b_v": (3,), "W_e": (2, 3), "b_e": (3,)}
    return {k: rng.normal(size=s) for k, s in shapes.items()}


@pytest.mark.parametrize("wrt", PARAMS)
def test_embed_bwd_finite_differences(wrt):
    rng = np.random.default_rng(8)
    a = _case(rng)
    n, H, Eh = embed_fwd(a["V"], a["E"], *(a[k] for k in PARAMS))
    wH, wE = rng.normal(size=H.shape), rng.normal(size=Eh.shape)
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    assert n == 0 == embed_bwd(wH, wE, a["V"], a["E"], H, *(g[k] for k in PARAMS))

    def f():
        _, H, Eh = embed_fwd(a["V"], a["E"], *(a[k] for k in PARAMS))
        return np.concatenate([(wH * H).ravel(), (wE * Eh).ravel()])

    check(f, a[wrt], g[wrt], np.ones(H.size + Eh.size))


def test_without_a_bond_gradient_the_bond_encoder_gets_none():
    rng = np.random.default_rng(9)
    a = _case(rng)
    _, H, _ = embed_fwd(a["V"], a["E"], *(a[k] for k in PARAMS))
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    embed_bwd(rng.normal(size=H.shape), H[:0], a["V"], a["E"], H, *(g[k] for k in PARAMS))
    assert np.abs(g["W_v"]).sum() > 0
    assert not g["W_e"].any() and not g["b_e"].any()


def test_counts_the_nonfinite_values_made_and_gathered():
    rng = np.random.default_rng(12)
    a = _case(rng)
    a["E"][1, 0] = np.nan                              # one bond's features
    n, H, Eh = embed_fwd(a["V"], a["E"], *(a[k] for k in PARAMS))
    assert n == np.count_nonzero(np.isnan(Eh)) > 0 and np.isfinite(H).all()
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    n = embed_bwd(np.ones_like(H), np.ones_like(Eh), a["V"], a["E"], H, *(g[k] for k in PARAMS))
    assert n == sum(np.count_nonzero(np.isnan(v)) for v in g.values()) > 0
