import json

import numpy as np
import pytest

from molpipe.nn.network import Network, NetworkConfig, build_network
from molpipe.nn.optim import Adam
from molpipe.nn.propagate import N_TYPES
from molpipe.nn.readout import AGGREGATIONS

from ..kernels.fd import num_grad, rel_err
from .graphs import (D_E, D_V, benzene_like, chain, instance, naphthalene_like, one_atom,
                     salt)

MEAN, STD = np.array([0.5, -1.0]), np.array([2.0, 0.5])


def net(task="regression", rings=True, dtype="float64", seed=0, hidden=4, ffn=5,
        propagate="fused", aggregation="mean", readout_features=False, loss="mse"):
    cfg = NetworkConfig(hidden=hidden, ffn=ffn, rings=rings, task=task, dtype=dtype, seed=seed,
                        propagate=propagate, aggregation=aggregation,
                        readout_features=readout_features, loss=loss)
    return build_network(cfg, D_V, D_E, 2, MEAN, STD)


def instances():
    rng = np.random.default_rng(0)
    return {
        "rings": instance([benzene_like(rng)], [[1.0, -2.0]]),
        "no_rings": instance([chain(rng, 5, 2)], [[0.3, 0.1]]),
        "one_atom": instance([one_atom(rng)], [[2.0, -0.5]]),
        "fragments": instance([salt(rng)], [[1.5, np.nan]]),
        "packed_rounds": instance([chain(rng, 4, 1), naphthalene_like(rng, 3), benzene_like(rng, 2),
                                   one_atom(rng, 2)],
                                  [[1.0, np.nan], [np.nan, -2.0], [0.0, 0.5], [3.0, 1.0]]),
    }


def check_network_gradient(network, inst, core=("embed.W_v", "propagate.b_x", "propagate.U_h",
                                                 "readout.W_2"), tol=1e-6):
    network.zero_grad()
    network.forward_backward("k", inst)
    for sname, stage in network.stages.items():
        assert stage.n_cached == 0
        for pname, p in stage.params.items():
            fd = num_grad(lambda: network.loss(inst), p)
            err = rel_err(stage.grads[pname], fd)
            assert err < tol, f"{sname}.{pname}: relative error {err:.2e}"
    # the check is not vacuous: the core parameters do get gradient
    for name in core:
        s, p = name.split(".")
        assert np.abs(network.stages[s].grads[p]).sum() > 0, name


@pytest.mark.parametrize("case", ["rings", "no_rings", "one_atom", "fragments", "packed_rounds"])
def test_regression_gradient_finite_differences(case):
    inst = instances()[case]
    network = net()
    check_network_gradient(network, inst)
    if inst.has_rings:
        assert np.abs(network.stages["rings"].grads["W_r"]).sum() > 0
    if inst.E.shape[0]:
        assert np.abs(network.stages["propagate"].grads["W_x"]).sum() > 0
        assert np.abs(network.stages["embed"].grads["W_e"]).sum() > 0
        assert np.abs(network.stages["propagate"].grads["W_m"]).sum() > 0


@pytest.mark.parametrize("aggregation", AGGREGATIONS)
@pytest.mark.parametrize("case", ["rings", "no_rings", "one_atom", "fragments", "packed_rounds"])
def test_split_round_gradient_finite_differences(case, aggregation):
    network = net(propagate="split", aggregation=aggregation)
    # norm divides the sum by 100: gradients below the readout are 100x smaller, and the
    # central differences' rounding error (about 1e-10 / eps) is larger beside them
    check_network_gradient(network, instances()[case],
                           core=("embed.W_v", "message.b_x", "update.U_h", "readout.W_2"),
                           tol=1e-4 if "norm" in aggregation else 1e-6)


@pytest.mark.parametrize("aggregation", ["mean", "mean+norm"])
@pytest.mark.parametrize("case", ["rings", "no_rings", "one_atom", "fragments", "packed_rounds"])
def test_bond_rounds_gradient_finite_differences(case, aggregation):
    network = net(propagate="bond", aggregation=aggregation, readout_features=True)
    assert list(network.stages) == ["embed", "message", "update", "rings", "readout", "loss"]
    inst = instances()[case]
    core = ("update.W_o", "readout.W_2")
    if inst.E.shape[0]:                      # bonds: the bond states get gradient
        core += ("embed.b_i", "message.W_h1", "update.W_h2")
    check_network_gradient(network, inst, core=core, tol=1e-4)


def test_bond_rounds_leave_out_the_reverse_bond():
    """A two-atom molecule's bond messages are empty (the only neighbour is the bond back):
    its prediction does not depend on W_h."""
    rng = np.random.default_rng(3)
    from .graphs import make_graph

    inst = instance([make_graph(rng, 2, [(0, 1, 0)], n_rounds=3)], [[0.0, 0.0]])
    network = net(propagate="bond")
    before = network.predict(inst)
    network.stages["message"].params["W_h1"][...] *= 5
    network.stages["update"].params["W_h2"][...] *= 5
    np.testing.assert_allclose(network.predict(inst), before, rtol=1e-12)
    bigger = instances()["rings"]
    before = network.predict(bigger)
    network.stages["update"].params["W_h2"][...] *= 2
    assert not np.allclose(network.predict(bigger), before)


@pytest.mark.parametrize("case", ["rings", "one_atom", "packed_rounds"])
def test_readout_features_gradient_finite_differences(case):
    network = net(propagate="split", aggregation="mean+norm", readout_features=True)
    assert network.stages["readout"].params["U_g"].shape == (D_V, 4)
    check_network_gradient(network, instances()[case],
                           core=("embed.W_v", "message.b_x", "readout.U_g", "readout.U_j"),
                           tol=1e-4)


@pytest.mark.parametrize("case", ["rings", "packed_rounds"])
def test_split_and_fused_rounds_are_the_same_function(case):
    inst = instances()[case]
    fused, split = net(propagate="fused"), net(propagate="split")
    assert fused.predict(inst) == pytest.approx(split.predict(inst), abs=1e-12)
    fused.forward_backward(0, inst)
    split.forward_backward(0, inst)
    for pname, g in fused.stages["propagate"].grads.items():
        owner = "message" if pname in split.stages["message"].grads else "update"
        np.testing.assert_allclose(split.stages[owner].grads[pname], g, rtol=1e-10, atol=1e-12)


def test_mean_and_sum_aggregation_differ_by_atom_count():
    inst = instances()["one_atom"]           # one atom: the mean is the sum
    assert net(aggregation="mean").predict(inst) == pytest.approx(net(aggregation="sum").predict(inst))
    big = instances()["rings"]
    assert not np.allclose(net(aggregation="mean").predict(big), net(aggregation="sum").predict(big))


def test_split_path_alternates_message_and_update():
    insts = instances()
    network = net(propagate="split")
    assert list(network.stages) == ["embed", "message", "update", "rings", "readout", "loss"]
    assert network.path(insts["rings"]) == [("embed", 0), ("message", 0), ("update", 0),
                                            ("message", 1), ("update", 1), ("rings", 0),
                                            ("readout", 0), ("loss", 0)]
    assert net(propagate="split", rings=False).route("update", 1, insts["rings"]) == ("readout", 0)
    assert NetworkConfig().propagate == "split"
    with pytest.raises(ValueError, match="propagate"):
        NetworkConfig(propagate="sideways")


def mve_net(**kw):
    """A mean-variance network whose raw variances spread over both arms of the softplus
    (b_2's variance half moved off zero), so the NLL's variance terms are exercised."""
    network = net(loss="mve", **kw)
    network.stages["readout"].params["b_2"][2:] = [1.5, -1.0]
    return network


@pytest.mark.parametrize("propagate", ["fused", "split"])
@pytest.mark.parametrize("case", ["rings", "no_rings", "one_atom", "fragments", "packed_rounds"])
def test_mve_gradient_finite_differences(case, propagate):
    network = mve_net(propagate=propagate, aggregation="mean+norm")
    assert network.stages["readout"].params["W_2"].shape == (5, 4)    # [mean | variance] x 2
    core = ("embed.W_v", "readout.W_2") + (("propagate.U_h",) if propagate == "fused"
                                           else ("update.U_h",))
    check_network_gradient(network, instances()[case], core=core, tol=1e-4)
    # the variance columns get gradient of their own (a present target per column)
    inst = instances()["packed_rounds"]
    network.zero_grad()
    network.forward_backward("v", inst)
    assert (np.abs(network.stages["readout"].grads["W_2"][:, 2:]).sum(axis=0) > 0).all()


def test_mve_predicts_the_mean_and_its_sd_in_data_units():
    from molpipe.kernels.loss import VAR_EPS

    network = mve_net()
    inst = instances()["packed_rounds"]
    x = {}
    for name, step in network.path(inst)[:-1]:
        x = network.stages[name].forward(None, step, x, inst, False)
    Y = x["Y"]
    assert Y.shape == (4, 4)
    pred, sd = network.predict_with_std(inst)
    np.testing.assert_allclose(pred, Y[:, :2] * STD + MEAN)
    np.testing.assert_allclose(sd, np.sqrt(np.log1p(np.exp(Y[:, 2:])) + VAR_EPS) * STD)
    np.testing.assert_array_equal(network.predict(inst), pred)
    assert (sd > 0).all() and np.isfinite(sd).all()
    # the variance half moves the SD, not the mean
    network.stages["readout"].params["b_2"][2:] += 1.0
    pred2, sd2 = network.predict_with_std(inst)
    np.testing.assert_allclose(pred2, pred)
    assert (sd2 > sd).all()
    # the additive baseline shifts the mean only
    ref = np.random.default_rng(2).normal(size=(D_V, 2))
    based = build_network(network.config, D_V, D_E, 2, MEAN, STD, atom_ref=ref)
    based.load_state_dict({**network.state_dict(), "loss.atom_ref": ref})
    pred3, sd3 = based.predict_with_std(inst)
    np.testing.assert_allclose(sd3, sd2)
    np.testing.assert_allclose(pred3 - pred2, based.stages["loss"].baseline(inst), rtol=1e-10)
    # an mse network predicts no SD; its loss is the MSE, the mve one the NLL
    assert net().predict_with_std(inst)[1] is None
    np.testing.assert_allclose(net().predict_with_std(inst)[0], net().predict(inst))


def test_mve_is_for_regression_and_old_configs_are_mse():
    with pytest.raises(ValueError, match="mve.*regression"):
        NetworkConfig(task="classification", loss="mve")
    with pytest.raises(ValueError, match="loss must be one of mse, mve"):
        NetworkConfig(loss="gauss")
    from molpipe.nn.loss import LossStage

    with pytest.raises(ValueError, match="regression"):
        LossStage(MEAN, STD, "classification", loss="mve")
    old = {k: v for k, v in NetworkConfig(loss="mve").to_dict().items() if k != "loss"}
    assert NetworkConfig.from_dict(old).loss == "mse"
    assert NetworkConfig.from_dict(NetworkConfig(loss="mve").to_dict()).loss == "mve"


@pytest.mark.parametrize("rings", [True, False])
def test_classification_gradient_finite_differences(rings):
    rng = np.random.default_rng(5)
    inst = instance([naphthalene_like(rng), chain(rng, 3, 1)], [[1.0, np.nan], [0.0, 1.0]])
    check_network_gradient(net("classification", rings=rings), inst)


def test_path_and_route():
    insts = instances()
    network = net()
    assert list(network.stages) == ["embed", "propagate", "rings", "readout", "loss"]
    assert network.first == "embed"
    assert network.path(insts["rings"]) == [("embed", 0), ("propagate", 0), ("propagate", 1),
                                            ("rings", 0), ("readout", 0), ("loss", 0)]
    assert network.path(insts["packed_rounds"])[1:5] == [("propagate", 0), ("propagate", 1),
                                                         ("propagate", 2), ("rings", 0)]
    assert network.path(insts["no_rings"]) == [("embed", 0), ("propagate", 0), ("propagate", 1),
                                               ("readout", 0), ("loss", 0)]
    assert network.route("loss", 0, insts["rings"]) is None
    off = net(rings=False)
    assert "rings" not in off.stages
    assert ("rings", 0) not in off.path(insts["rings"])
    assert off.route("propagate", 1, insts["rings"]) == ("readout", 0)


def test_missing_targets_and_predictions():
    network = net()
    inst = instances()["packed_rounds"]
    loss, pred = network.forward_backward("a", inst)
    assert np.isfinite(loss) and loss > 0
    assert pred.shape == (4, 2)
    np.testing.assert_allclose(network.predict(inst), pred)
    assert all(s.n_cached == 0 for s in network.stages.values())
    # all targets missing: loss 0, no gradient reaches the parameters
    rng = np.random.default_rng(1)
    empty = instance([chain(rng)], [[np.nan, np.nan]])
    network.zero_grad()
    loss, _ = network.forward_backward("b", empty)
    assert loss == 0.0
    assert all(not g.any() for s in network.stages.values() for g in s.grads.values())


def test_predictions_in_data_units():
    network = net()
    inst = instances()["rings"]
    x = {}
    for name, step in network.path(inst)[:-1]:
        x = network.stages[name].forward(None, step, x, inst, False)
    np.testing.assert_allclose(network.predict(inst), x["Y"] * STD + MEAN)
    cls = net("classification")
    p = cls.predict(inst)
    assert np.all((p > 0) & (p < 1))


def test_grads_accumulate():
    network = net()
    inst = instances()["rings"]
    network.forward_backward(1, inst)
    once = {k: v.copy() for k, v in network.stages["propagate"].grads.items()}
    network.forward_backward(2, inst)
    for k, v in network.stages["propagate"].grads.items():
        np.testing.assert_allclose(v, 2 * once[k])


def test_same_seed_same_network_and_different_seed_differs():
    a, b, c = net(seed=3), net(seed=3), net(seed=4)
    sa, sb, sc = a.state_dict(), b.state_dict(), c.state_dict()
    assert sa.keys() == sb.keys()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert any(not np.array_equal(sa[k], sc[k]) for k in sa)


def test_state_dict_roundtrip_and_errors():
    a, b = net(seed=1), net(seed=2)
    sd = a.state_dict()
    assert "propagate.W_m" in sd and "loss.mean" in sd and "loss.std" in sd
    assert sd["propagate.W_m"].shape == (N_TYPES, 4, 4)
    inst = instances()["rings"]
    b.load_state_dict(sd)
    np.testing.assert_array_equal(a.predict(inst), b.predict(inst))
    bad = dict(sd, **{"readout.W_1": np.zeros((3, 3))})
    with pytest.raises(ValueError, match="readout.W_1"):
        b.load_state_dict(bad)
    with pytest.raises(ValueError, match="missing"):
        b.load_state_dict({k: v for k, v in sd.items() if k != "embed.b_v"})


def old_layout(a):
    """W_m (or a slot of it) as saved before it became per-type blocks: (d_h, n_types d_h)."""
    n_types, d_h, _ = a.shape
    return a.transpose(1, 0, 2).reshape(d_h, n_types * d_h)


@pytest.mark.parametrize("propagate,stage", [("fused", "propagate"), ("split", "message")])
def test_old_w_m_layout_loads_into_the_network_and_adam(propagate, stage):
    inst = instances()["packed_rounds"]
    a = net(seed=1, propagate=propagate)
    opts = {n: Adam(s.params, lr=1e-2) for n, s in a.stages.items() if s.params}
    for i in range(2):                              # Adam slots that are not zero
        a.zero_grad()
        a.forward_backward(i, inst)
        for n, o in opts.items():
            o.step(a.stages[n].grads)
    sd, osd = a.state_dict(), opts[stage].state_dict()
    key = f"{stage}.W_m"
    assert sd[key].shape == (N_TYPES, 4, 4) and osd["m.W_m"].shape == (N_TYPES, 4, 4)
    old = dict(sd, **{key: old_layout(sd[key])})
    assert old[key].shape == (4, N_TYPES * 4)
    old_opt = dict(osd, **{s: old_layout(osd[s]) for s in ("m.W_m", "v.W_m")})

    b = net(seed=2, propagate=propagate)
    assert not np.array_equal(b.predict(inst), a.predict(inst))
    b.load_state_dict(old)
    np.testing.assert_array_equal(b.predict(inst), a.predict(inst))
    for k, v in b.state_dict().items():
        np.testing.assert_array_equal(v, sd[k])
    assert b.stages[stage].params["W_m"].flags.c_contiguous
    ob = Adam(b.stages[stage].params, lr=1.0)
    ob.load_state_dict(old_opt)
    for s in ("m", "v"):
        np.testing.assert_array_equal(ob.state[s]["W_m"], osd[f"{s}.W_m"])
    # and the next step moves both alike
    g = {k: np.full_like(v, 0.1) for k, v in a.stages[stage].params.items()}
    opts[stage].step(g)
    ob.step(g)
    np.testing.assert_array_equal(b.stages[stage].params["W_m"], a.stages[stage].params["W_m"])

    # any other shape is still refused, naming the array
    for bad in (old[key].T, old[key][:, :-1], sd[key][:, :, :-1]):
        with pytest.raises(ValueError, match=key):
            b.load_state_dict(dict(sd, **{key: bad}))
        with pytest.raises(ValueError, match="m.W_m"):
            Adam(b.stages[stage].params).load_state_dict(dict(osd, **{"m.W_m": bad}))
    # the old layout is W_m's only: another 2-D array of that size is not reshaped
    with pytest.raises(ValueError, match=f"{stage}.W_x"):
        b.load_state_dict(dict(sd, **{f"{stage}.W_x": sd[f"{stage}.W_x"].T}))


def test_config_json_roundtrip_and_defaults():
    cfg = NetworkConfig(hidden=32, task="classification", dtype="float64", seed=7)
    assert cfg.ffn == 32
    again = NetworkConfig.from_dict(json.loads(json.dumps(cfg.to_dict())))
    assert again == cfg
    assert NetworkConfig().hidden == 128 and NetworkConfig().ffn == 128
    with pytest.raises(ValueError):
        NetworkConfig(task="ranking")
    with pytest.raises(ValueError):
        NetworkConfig.from_dict({"hiden": 3})


def test_float32_network_stays_float32():
    network = net(dtype="float32", hidden=8, ffn=8)
    inst = instances()["packed_rounds"]
    loss, pred = network.forward_backward(0, inst)
    assert np.isfinite(loss)
    for s in network.stages.values():
        for k, g in s.grads.items():
            assert g.dtype == np.float32 and s.params[k].dtype == np.float32
    assert pred.dtype == np.float32
    assert isinstance(network, Network)
