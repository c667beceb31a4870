import numpy as np
import pytest

from molpipe.nn.network import NetworkConfig, build_network
from molpipe.nn.optim import Adam

from .graphs import D_E, D_V, benzene_like, chain, instance


def train(n_steps, opt_cls, **kw):
    rng = np.random.default_rng(0)
    insts = [instance([benzene_like(rng), chain(rng)], [[1.0], [-1.0]]) for _ in range(3)]
    network = build_network(NetworkConfig(hidden=8, seed=11), D_V, D_E, 1)
    opts = {n: opt_cls(s.params, **kw) for n, s in network.stages.items()}
    losses = []
    for i in range(n_steps):
        network.zero_grad()
        losses.append(sum(network.forward_backward(i, inst)[0] for inst in insts))
        for n, s in network.stages.items():
            opts[n].step(s.grads, 1.0 / len(insts))
    return network, opts, losses


def test_adam_is_deterministic_and_learns():
    a, _, la = train(30, Adam, lr=1e-2)
    b, _, lb = train(30, Adam, lr=1e-2)
    sa, sb = a.state_dict(), b.state_dict()
    for k in sa:
        np.testing.assert_array_equal(sa[k], sb[k])
    assert la == lb
    assert la[-1] < 0.5 * la[0]


def test_step_uses_scale_and_updates_in_place():
    p = {"w": np.ones(3, np.float32)}
    ref = p["w"]
    opt = Adam(p, lr=0.5)
    opt.step({"w": np.full(3, 4.0, np.float32)}, scale=0.25)
    assert p["w"] is ref
    np.testing.assert_allclose(ref, 0.5, rtol=1e-4)      # Adam's first step moves by lr
    before = ref.copy()
    opt.lr = 0.0  # a scheduler may change lr
    opt.step({"w": np.ones(3, np.float32)}, 1.0)
    np.testing.assert_array_equal(ref, before)


def test_adam_first_step_moves_by_lr():
    p = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
    opt = Adam(p, lr=0.1)
    opt.step({"w": np.array([[1.0, -3.0], [0.5, 0.0]]), "b": np.ones(2)}, 2.0)
    np.testing.assert_allclose(p["w"], [[-0.1, 0.1], [-0.1, 0.0]], atol=1e-6)
    assert opt.t == 1


@pytest.mark.parametrize("opt_cls,kw", [(Adam, {"lr": 1e-2, "weight_decay": 1e-3}),
                                        (Adam, {"lr": 1e-2, "average": 0.9})])
def test_state_dict_resumes_identically(opt_cls, kw):
    rng = np.random.default_rng(0)
    grads = [{"w": rng.normal(size=(3, 2))} for _ in range(6)]
    p1 = {"w": np.ones((3, 2))}
    o1 = opt_cls(p1, **kw)
    for g in grads:
        o1.step(g, 1.0)
    p2 = {"w": np.ones((3, 2))}
    o2 = opt_cls(p2, **kw)
    for g in grads[:3]:
        o2.step(g, 1.0)
    state, saved = o2.state_dict(), p2["w"].copy()
    p3 = {"w": saved}
    o3 = opt_cls(p3, lr=123.0)
    o3.load_state_dict(state)
    assert o3.lr == kw["lr"]
    for g in grads[3:]:
        o3.step(g, 1.0)
    np.testing.assert_array_equal(p3["w"], p1["w"])


def test_average_is_the_moving_average_of_the_parameters():
    rng = np.random.default_rng(4)
    p = {"w": rng.normal(size=(3, 2))}
    opt = Adam(p, lr=0.1, average=0.9)
    ref = p["w"].copy()
    for t in range(1, 40):
        opt.step({"w": rng.normal(size=(3, 2))})
        beta = min(0.9, (1 + t) / (10 + t))
        ref = beta * ref + (1 - beta) * p["w"]
    np.testing.assert_allclose(opt.state["avg"]["w"], ref, rtol=1e-12)
    assert not np.allclose(ref, p["w"])                   # the average lags the live weights


def test_averaged_weights_swaps_in_place_and_back():
    from molpipe.nn.optim import averaged_weights

    rng = np.random.default_rng(5)
    live = rng.normal(size=4)
    stages = {"a": type("S", (), {"params": {"w": live}})(), "b": type("S", (), {"params": {}})()}
    opt = Adam(stages["a"].params, average=0.5)
    opt.state["avg"]["w"][:] = 7.0
    before = live.copy()
    with averaged_weights(stages, {"a": opt, "b": Adam({})}):
        assert (stages["a"].params["w"] == 7.0).all() and stages["a"].params["w"] is live
    np.testing.assert_array_equal(live, before)


def test_a_state_dict_from_before_averaging_loads():
    rng = np.random.default_rng(6)
    p = {"w": rng.normal(size=3)}
    old = Adam({"w": p["w"].copy()}).state_dict()
    del old["average"]                                     # written before the field existed
    opt = Adam(p, average=0.99)
    opt.load_state_dict(old)
    assert opt.average == 0.0                              # the old run did not average
    fresh = Adam(p, average=0.99)
    fresh.load_state_dict({**old, "average": 0.99})        # averaging on, no avg slot saved
    np.testing.assert_array_equal(fresh.state["avg"]["w"], p["w"])
    # a worker built without averaging takes it on from a pushed state
    worker = Adam({"w": p["w"].copy()})
    worker.load_state_dict(fresh.state_dict())
    assert worker.average == 0.99 and "avg" in worker.state
