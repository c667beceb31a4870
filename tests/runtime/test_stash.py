"""Weight stashing: every backward sees exactly the weights its forward used; nothing leaks."""

import numpy as np
import pytest

from molpipe.runtime import Pipeline

from .toy import FIRST, make_items, make_net, route


def _watch(stage):
    """Make ``stage`` record, per backward, whether its weights equal the forward's."""
    seen, same = {}, []
    fwd, bwd = stage.forward, stage.backward

    def forward(key, step, x, inst, train):
        if train:
            seen[(key, step)] = {k: v.copy() for k, v in stage.params.items()}
        return fwd(key, step, x, inst, train)

    def backward(key, step, dy, inst):
        then = seen.pop((key, step))
        same.append(all(np.array_equal(then[k], stage.params[k]) for k in then))
        return bwd(key, step, dy, inst)

    stage.forward, stage.backward = forward, backward
    return same


@pytest.mark.parametrize("stash", [True, False])
def test_backward_sees_the_forward_weights_only_with_stashing(stash):
    stages, opts = make_net(delay=2e-4)
    checks = {name: _watch(stages[name]) for name in ("loop", "head")}
    with Pipeline(stages, opts, route, FIRST, max_active_keys=8,
                  weight_stashing=stash) as p:
        p.run(make_items(120))
        leftover = sum(s.n_versions for w in p.workers for s in (w.stash or {}).values())
    verdicts = [v for c in checks.values() for v in c]
    assert len(verdicts) > 120
    if stash:
        assert all(verdicts)
        assert leftover == 0
    else:                       # the check can fail: without stashing weights do move
        assert not all(verdicts)


def _adam_net(seed=0, lr=0.02, delay=0.0):
    from molpipe.nn.optim import Adam

    stages, _ = make_net(seed=seed, delay=delay)
    return stages, {s: Adam(st.params, lr=lr) for s, st in stages.items()}


def test_prediction_with_staleness_zero_is_the_plain_forward():
    from molpipe.runtime.stash import PredictedWeights

    stages, opts = _adam_net()
    stage, opt = stages["loop"], opts["loop"]
    opt.step({k: np.ones_like(p) for k, p in stage.params.items()})    # a direction exists
    live = stage.params
    pw = PredictedWeights(stage, opt)
    with pw.forward("k", 0, version=0, s=0):
        assert stage.params is live                 # nothing copied, nothing moved
    with pw.backward("k", 0, current=0):
        assert stage.params is live
    assert pw.n_versions == 0 and not pw.refs


def test_predicted_weights_follow_the_formula_for_a_known_adam_state():
    from molpipe.nn.optim import Adam
    from molpipe.runtime.stash import PredictedWeights

    stages, _ = make_net(seed=1)
    stage = stages["head"]
    opt = Adam(stage.params, lr=0.01, betas=(0.9, 0.99), eps=1e-8)
    rng = np.random.default_rng(2)
    opt.t = 3
    for k in stage.params:
        opt.state["m"][k][...] = rng.normal(size=stage.params[k].shape)
        opt.state["v"][k][...] = rng.random(stage.params[k].shape)
    live = {k: p.copy() for k, p in stage.params.items()}
    pw = PredictedWeights(stage, opt)
    with pw.forward("a", 0, version=5, s=3):
        for k, p in stage.params.items():
            m_hat = opt.state["m"][k] / (1 - 0.9 ** 3)
            v_hat = opt.state["v"][k] / (1 - 0.99 ** 3)
            np.testing.assert_allclose(p, live[k] - 0.01 * 3 * m_hat / (np.sqrt(v_hat) + 1e-8),
                                       rtol=1e-12, atol=0)
        predicted = stage.params
    for k, p in stage.params.items():
        np.testing.assert_array_equal(p, live[k])      # the live weights did not move
    pw.before_update(5)
    with pw.backward("a", 0, current=6):             # after an update: the same prediction
        assert stage.params is predicted
    assert pw.n_versions == 0
    assert PredictedWeights(stage, Adam(stage.params)).n_versions == 0


@pytest.mark.parametrize("stash", [True, False])
def test_prediction_in_a_pipeline_backward_sees_the_predicted_weights_with_stashing(stash):
    stages, opts = _adam_net(delay=2e-4)
    checks = {name: _watch(stages[name]) for name in ("loop", "head")}
    live_at_forward = []
    fwd = stages["embed"].forward

    def forward(key, step, x, inst, train):
        if train:
            live_at_forward.append(stages["embed"].params is opts["embed"].params)
        return fwd(key, step, x, inst, train)

    stages["embed"].forward = forward
    with Pipeline(stages, opts, route, FIRST, max_active_keys=8, weight_stashing=stash,
                  weight_prediction=True) as p:
        p.run(make_items(150))
        leftover = sum(s.n_versions for w in p.workers for s in w.stash.values())
        expected = {name: w.expected[name] for w in p.workers for name in w.stages}
    verdicts = [v for c in checks.values() for v in c]
    assert expected["embed"] > 0.5 and expected["loss"] == 0
    assert not all(live_at_forward)                 # some forwards ran on predicted weights
    assert all(live_at_forward[:3])                 # the first ones on the live weights
    assert leftover == 0
    if stash:
        assert all(verdicts)
    else:                                           # the backward takes the live weights
        assert not all(verdicts)
