import numpy as np
import pytest

from molpipe.nn.network import NetworkConfig, build_network
from molpipe.nn.optim import SGD, Adam

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


def test_sgd_learns():
    _, _, losses = train(30, SGD, lr=0.05, momentum=0.9)
    assert losses[-1] < losses[0]


def test_step_uses_scale_and_updates_in_place():
    p = {"w": np.ones(3, np.float32)}
    ref = p["w"]
    opt = SGD(p, lr=0.5)
    opt.step({"w": np.full(3, 4.0, np.float32)}, scale=0.25)
    assert p["w"] is ref
    np.testing.assert_allclose(ref, 0.5)
    opt.lr = 0.0  # a scheduler may change lr
    opt.step({"w": np.ones(3, np.float32)}, 1.0)
    np.testing.assert_allclose(ref, 0.5)


def test_adam_first_step_moves_by_lr():
    p = {"w": np.zeros((2, 2)), "b": np.zeros(2)}
    opt = Adam(p, lr=0.1)
    opt.step({"w": np.array([[1.0, -3.0], [0.5, 0.0]]), "b": np.ones(2)}, 2.0)
    np.testing.assert_allclose(p["w"], [[-0.1, 0.1], [-0.1, 0.0]], atol=1e-6)
    assert opt.t == 1


@pytest.mark.parametrize("opt_cls,kw", [(Adam, {"lr": 1e-2, "weight_decay": 1e-3}),
                                        (SGD, {"lr": 1e-2, "momentum": 0.9})])
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
