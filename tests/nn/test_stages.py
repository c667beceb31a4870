"""Stage contract: caching under (key, step), popping, adding grads, interleaved keys."""

import numpy as np
import pytest

from molpipe.nn.init import glorot
from molpipe.nn.network import NetworkConfig, build_network
from molpipe.nn.propagate import N_TYPES

from .graphs import D_E, D_V, benzene_like, chain, instance, naphthalene_like, one_atom


def net(**kw):
    kw = {"propagate": "fused", **kw}          # these tests look at the one-stage round
    return build_network(NetworkConfig(hidden=6, ffn=4, dtype="float64", **kw), D_V, D_E, 1,
                         [1.0], [2.0])


def insts():
    rng = np.random.default_rng(2)
    return (instance([benzene_like(rng, 3), chain(rng, 3, 1)], [[1.0], [2.0]]),
            instance([naphthalene_like(rng, 2), one_atom(rng, 1)], [[0.5], [np.nan]]))


def test_interleaved_keys_give_the_same_grads_as_sequential():
    a, b = insts()
    seq = net()
    seq.forward_backward("a", a)
    seq.forward_backward("b", b)
    inter = net()
    outs = {}
    for key, inst in (("a", a), ("b", b)):   # both forwards first, as a pipeline would
        x = {}
        for name, step in inter.path(inst):
            x = inter.stages[name].forward(key, step, x, inst, True)
        outs[key] = x
    assert sum(s.n_cached for s in inter.stages.values()) > 0
    for key, inst in (("b", b), ("a", a)):   # backwards in the other order
        dy = {}
        for name, step in reversed(inter.path(inst)):
            dy = inter.stages[name].backward(key, step, dy, inst)
    for name, stage in seq.stages.items():
        assert inter.stages[name].n_cached == 0
        for k, g in stage.grads.items():
            np.testing.assert_allclose(inter.stages[name].grads[k], g, rtol=1e-12, atol=1e-14)


@pytest.mark.parametrize("propagate,stage", [("fused", "propagate"), ("split", "message")])
def test_w_m_is_per_type_blocks_of_the_seeds_glorot_draw(propagate, stage):
    """W_m is (n_types, d_h, d_h), every block contiguous, and holds the values the seed drew
    for the (d_h, n_types d_h) column blocks it replaced: a seed gives the same network."""
    d_h, seed = 6, 5
    network = build_network(NetworkConfig(hidden=d_h, seed=seed, propagate=propagate), D_V, D_E, 1)
    W_m = network.stages[stage].params["W_m"]
    assert W_m.shape == (N_TYPES, d_h, d_h) and W_m.flags.c_contiguous
    assert network.stages[stage].grads["W_m"].shape == W_m.shape
    rng = np.random.default_rng(seed)           # the draws before W_m's: the embed stage's
    glorot(rng, D_V, d_h), glorot(rng, D_E, d_h)
    cols = glorot(rng, d_h, d_h, N_TYPES, np.float32)
    for t in range(N_TYPES):
        np.testing.assert_array_equal(W_m[t], cols[:, t * d_h:(t + 1) * d_h])


def test_forward_without_train_caches_nothing_and_backward_needs_cache():
    a, _ = insts()
    network = net()
    x = network.stages["embed"].forward("k", 0, {}, a, False)
    assert network.stages["embed"].n_cached == 0
    with pytest.raises(KeyError):
        network.stages["embed"].backward("k", 0, {"H": x["H"], "Ea": x["Ea"]}, a)


def test_propagate_freezes_finished_molecules_and_passes_ea():
    a, _ = insts()   # benzene-like: 3 rounds, chain: 1 round
    network = net()
    e = network.stages["embed"].forward(None, 0, {}, a, False)
    prop = network.stages["propagate"]
    out = prop.forward("k", 1, e, a, True)
    frozen = a.atom_rounds <= 1
    assert frozen.any() and (~frozen).any()
    np.testing.assert_array_equal(out["H"][frozen], e["H"][frozen])
    assert not np.allclose(out["H"][~frozen], e["H"][~frozen])
    assert out["Ea"] is e["Ea"]
    # absent Ea gradient is zero; a given one is added to this round's contribution
    dH = np.ones_like(out["H"])
    g0 = prop.backward("k", 1, {"H": dH}, a)
    prop.forward("k", 1, e, a, True)
    extra = np.full_like(e["Ea"], 0.25)
    g1 = prop.backward("k", 1, {"H": dH, "Ea": extra}, a)
    np.testing.assert_allclose(g1["Ea"], g0["Ea"] + 0.25)
    np.testing.assert_array_equal(g0["H"][frozen], 1.0)


def test_rings_stage_drops_ea_and_returns_only_dh():
    a, _ = insts()
    network = net()
    x = {}
    for name, step in network.path(a)[:-3]:
        x = network.stages[name].forward(None, step, x, a, False)
    rings = network.stages["rings"]
    out = rings.forward("k", 0, x, a, True)
    assert set(out) == {"H"}
    dx = rings.backward("k", 0, {"H": np.ones_like(out["H"])}, a)
    assert set(dx) == {"H"} and dx["H"].shape == x["H"].shape


def test_embed_casts_features_to_parameter_dtype():
    a, _ = insts()
    for dtype in ("float32", "float64"):
        network = build_network(NetworkConfig(hidden=4, dtype=dtype), D_V, D_E, 1)
        out = network.stages["embed"].forward(None, 0, {}, a, False)
        assert out["H"].dtype == np.dtype(dtype) and out["Ea"].dtype == np.dtype(dtype)


def test_loss_stage_buffers_and_backward():
    a, _ = insts()
    network = net(task="regression")
    loss = network.stages["loss"]
    assert loss.params == {} and set(loss.buffers) == {"mean", "std", "atom_ref"}
    assert loss.buffers["atom_ref"].shape == (D_V, 1) and not loss.buffers["atom_ref"].any()
    Y = np.array([[0.0], [0.5]])
    out = loss.forward("k", 0, {"Y": Y}, a, True)
    T = (a.Y.astype(float) - 1.0) / 2.0
    np.testing.assert_allclose(out["loss"], [np.mean((Y - T) ** 2)])
    np.testing.assert_allclose(out["pred"], Y * 2.0 + 1.0)
    dY = loss.backward("k", 0, {}, a)["Y"]
    np.testing.assert_allclose(dY, 2 * (Y - T) / 2)
    with pytest.raises(ValueError):
        build_network(NetworkConfig(hidden=4), D_V, D_E, 1, [0.0], [0.0])


def test_loss_stage_measures_targets_from_the_additive_baseline():
    a, _ = insts()
    ref = np.random.default_rng(3).normal(size=(D_V, 1))
    network = build_network(NetworkConfig(hidden=4, dtype="float64"), D_V, D_E, 1,
                            [1.0], [2.0], atom_ref=ref)
    loss = network.stages["loss"]
    base = np.array([[a.V[a.atom_mol == m].sum(axis=0) @ ref[:, 0]] for m in range(a.n_mols)])
    Y = np.array([[0.0], [0.5]])
    out = loss.forward("k", 0, {"Y": Y}, a, True)
    T = (a.Y.astype(float) - base - 1.0) / 2.0
    np.testing.assert_allclose(out["loss"], [np.mean((Y - T) ** 2)])
    np.testing.assert_allclose(out["pred"], Y * 2.0 + 1.0 + base)
    np.testing.assert_allclose(loss.backward("k", 0, {}, a)["Y"], 2 * (Y - T) / 2)


def test_a_state_dict_from_before_the_baseline_loads_with_none():
    network = net(task="regression")
    old = {k: v for k, v in network.state_dict().items() if k != "loss.atom_ref"}
    network.stages["loss"].buffers["atom_ref"][...] = 1.0
    network.load_state_dict(old)
    assert not network.stages["loss"].buffers["atom_ref"].any()


def test_two_stages_in_two_threads_at_once():
    from concurrent.futures import ThreadPoolExecutor

    a, b = insts()
    network = net()
    ref = net()
    e_a = ref.stages["embed"].forward(None, 0, {}, a, False)
    e_b = ref.stages["embed"].forward(None, 0, {}, b, False)
    h_b = {"H": ref.stages["propagate"].forward(None, 0, e_b, b, False)["H"]}
    want_p = ref.stages["propagate"].forward(None, 0, e_a, a, False)["H"]
    want_r = ref.stages["readout"].forward(None, 0, h_b, b, False)["Y"]

    def run_propagate():
        return [network.stages["propagate"].forward(i, 0, e_a, a, True)["H"] for i in range(50)]

    def run_readout():
        return [network.stages["readout"].forward(i, 0, h_b, b, True)["Y"] for i in range(50)]

    with ThreadPoolExecutor(2) as pool:
        fp, fr = pool.submit(run_propagate), pool.submit(run_readout)
        outs_p, outs_r = fp.result(), fr.result()
    for h in outs_p:
        np.testing.assert_array_equal(h, want_p)
    for y in outs_r:
        np.testing.assert_array_equal(y, want_r)
    assert network.stages["propagate"].n_cached == 50 and network.stages["readout"].n_cached == 50
