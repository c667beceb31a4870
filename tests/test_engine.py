"""The schedules against each other on the real network: async (mak=1, muf=1) == reference."""

import numpy as np
import pytest

from molpipe.chem.featurize import featurize
from molpipe.data.instance import pack
from molpipe.training.engines import make_engine, make_optimizers
from molpipe.nn.network import NetworkConfig, build_network

SMILES = ["c1ccccc1O", "CCO", "C", "CC(=O)[O-].[Na+]", "c1ccc2ccccc2c1", "CCCCCCCCN",
          "C1CCCCC1", "OC(=O)c1ccncc1", "FC(F)(F)C#N", "CC(C)(C)c1ccc(O)cc1"]


def _items(n_instances: int, per: int, seed: int = 0):
    rng = np.random.default_rng(seed)
    graphs = [featurize(s, max_rounds=4) for s in SMILES]
    items = []
    for key in range(n_instances):
        pick = rng.choice(len(graphs), per, replace=True)
        Y = rng.normal(size=(per, 2))
        Y[rng.random((per, 2)) < 0.2] = np.nan          # missing targets are masked
        items.append((key, pack([graphs[i] for i in pick], Y, rows=pick)))
    return items


def _network(dtype="float64", **config):
    g = featurize("CCO")
    return build_network(NetworkConfig(hidden=16, dtype=dtype, **config), g.V.shape[1],
                         g.E.shape[1], 2, np.zeros(2), np.ones(2), seed=3)


def _trained(schedule: str, items, network=None, **kw):
    net = network or _network()
    opts = make_optimizers(net, 1e-2)
    with make_engine(schedule, net, opts, **kw) as engine:
        res = engine.train(items)
    return net.state_dict(), res


def test_async_mak1_muf1_reproduces_the_reference_trainer():
    items = _items(200, 3)
    ref, ref_res = _trained("reference", items)
    asy, asy_res = _trained("async", items, max_active_keys=1, min_update_frequency=1)
    assert ref.keys() == asy.keys()
    for k in ref:
        np.testing.assert_allclose(asy[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    # and the parameters did move: the comparison is not vacuous
    assert max(np.abs(ref[k] - _network().state_dict()[k]).max() for k in ref) > 1e-3
    for key in ref_res.losses:
        assert asy_res.losses[key] == pytest.approx(ref_res.losses[key], abs=1e-9)


@pytest.mark.parametrize("config", [dict(aggregation="attention", dropout=0.2),
                                    dict(aggregation="mean", dropout=0.0),
                                    dict(aggregation="norm", dropout=0.5),
                                    dict(aggregation="mean+norm", readout_features=True),
                                    dict(propagate="bond", dropout=0.1),
                                    dict(loss="mve", dropout=0.1)])
def test_every_readout_keeps_async_mak1_muf1_exact(config):
    """Dropout masks come from (seed, key, step), not from the order stages see instances."""
    items = _items(60, 3, seed=7)
    ref, _ = _trained("reference", items, _network(**config))
    asy, _ = _trained("async", items, _network(**config), max_active_keys=1)
    for k in ref:
        np.testing.assert_allclose(asy[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    # a different dropout seed trains other parameters: the masks matter
    if config.get("dropout"):
        other = _network(**config)
        other.stages["readout"].seed = 99
        moved, _ = _trained("reference", items, other)
        assert not np.allclose(moved["readout.W_2"], ref["readout.W_2"])


def test_a_mean_variance_head_trains_async_as_the_reference_trainer():
    """--loss mve is one more loss stage: async at mak 1 muf 1 is the reference trainer, and
    async with instances in flight trains it too, predicting a positive, finite SD."""
    items = _items(120, 3, seed=9)
    ref, ref_res = _trained("reference", items, _network(loss="mve"))
    asy, asy_res = _trained("async", items, _network(loss="mve"), max_active_keys=1,
                            min_update_frequency=1)
    for k in ref:
        np.testing.assert_allclose(asy[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    for key in ref_res.losses:
        assert asy_res.losses[key] == pytest.approx(ref_res.losses[key], abs=1e-9)
    # the NLL is not the MSE: the same items train other parameters
    mse, _ = _trained("reference", items)
    assert not np.allclose(mse["readout.b_1"], ref["readout.b_1"])
    net = _network("float32", loss="mve")
    with make_engine("async", net, make_optimizers(net, 1e-3), max_active_keys=4,
                     min_update_frequency=2) as engine:
        res = engine.train(items)
        pred = engine.predict(items[:5])
    assert sorted(res.losses) == [k for k, _ in items]
    assert all(np.isfinite(v) for v in res.losses.values())
    assert pred.preds[0].shape == (3, 2)                  # the means, one column per target
    _, sd = net.predict_with_std(items[0][1])
    assert sd.shape == (3, 2) and (sd > 0).all() and np.isfinite(sd).all()


NEUTRAL = [dict(update_criterion="count"), dict(update_criterion="atoms:1"),
           dict(update_criterion="gradnorm:1e3:1"), dict(update_criterion="backlog:1"),
           dict(admission="atoms:100000"), dict(weight_prediction=True),
           dict(weight_prediction=True, weight_stashing=True),
           # one atom's budget admits one instance at a time whatever mak says
           dict(admission="atoms:1", max_active_keys=8, weight_prediction=True)]


@pytest.mark.parametrize("options", NEUTRAL, ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_every_new_option_at_its_neutral_setting_keeps_async_mak1_muf1_exact(options):
    items = _items(60, 3, seed=6)
    ref, _ = _trained("reference", items)
    kw = {"max_active_keys": 1, "min_update_frequency": 1, **options}
    asy, res = _trained("async", items, **kw)
    for k in ref:
        np.testing.assert_allclose(asy[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    assert res.in_flight_max == 1


@pytest.mark.parametrize("options", [dict(update_criterion="atoms:60"),
                                     dict(update_criterion="gradnorm:0.05:8"),
                                     dict(update_criterion="backlog:8"),
                                     dict(admission="atoms:80"), dict(weight_prediction=True)],
                         ids=lambda o: ",".join(f"{k}={v}" for k, v in o.items()))
def test_async_training_with_every_new_option_reduces_the_loss(options):
    items = _items(30, 3, seed=7)
    net = _network("float32")
    with make_engine("async", net, make_optimizers(net, 1e-2), max_active_keys=4,
                     **options) as engine:
        losses = [np.nanmean(list(engine.train(items).losses.values())) for _ in range(10)]
    assert losses[-1] < 0.95 * losses[0], losses          # (random targets: a slow descent)
    assert all(stage.n_cached == 0 for stage in net.stages.values())


def test_two_workers_hosting_three_stages_each_reproduce_the_reference_trainer():
    items = _items(80, 3, seed=5)
    ref, _ = _trained("reference", items)
    two = {"embed": 0, "message": 0, "readout": 0, "update": 1, "rings": 1, "loss": 1}
    asy, res = _trained("async", items, max_active_keys=1, placement=two)
    for k in ref:
        np.testing.assert_allclose(asy[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    assert len(res.utilization) == 2


def test_sync_updating_after_every_instance_is_the_reference_trainer():
    # sync-each with muf 1 (bench's equal-update-frequency baseline): mak 4 slots, but one
    # instance per update, so nothing overlaps and the result is the sequential trainer's
    items = _items(60, 3, seed=4)
    ref, _ = _trained("reference", items)
    syn, _ = _trained("sync", items, max_active_keys=4, sync_group=1)
    for k in ref:
        np.testing.assert_allclose(syn[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    grouped, _ = _trained("sync", items, max_active_keys=4)          # groups of 4: different
    assert max(np.abs(grouped[k] - ref[k]).max() for k in ref) > 1e-6


def test_async_many_in_flight_completes_every_instance_and_leaks_nothing():
    items = _items(60, 4, seed=1)
    net = _network("float32")
    with make_engine("async", net, make_optimizers(net, 1e-3), max_active_keys=8,
                     min_update_frequency=4) as engine:
        res = engine.train(items)
        pred = engine.predict(items[:10])
    assert sorted(res.losses) == [k for k, _ in items]
    assert all(np.isfinite(v) for v in res.losses.values())
    assert all(stage.n_cached == 0 for stage in net.stages.values())
    assert sorted(pred.preds) == list(range(10))
    assert pred.preds[0].shape == (4, 2)


def test_the_timeline_is_the_last_training_runs_after_evaluation_runs():
    items = _items(6, 2, seed=2)
    net = _network("float32")
    with make_engine("async", net, make_optimizers(net, 1e-3), max_active_keys=2,
                     trace=True) as engine:
        engine.train(items[:3])
        engine.train(items[3:])
        engine.predict(items[:2])
        entries = engine.trace()
    assert {e[3] for e in entries} == {3, 4, 5, None}   # the last training run (None: updates)
    assert {e[6] for e in entries} >= {"forward", "backward", "update"}
    assert "eval" not in {e[6] for e in entries}
    assert [e[1] for e in entries] == sorted(e[1] for e in entries)
    assert all(0 <= e[1] <= e[2] for e in entries)


def test_sync_schedule_is_bit_for_bit_reproducible():
    items = _items(40, 3, seed=2)
    runs = [_trained("sync", items, max_active_keys=4)[0] for _ in range(3)]
    for other in runs[1:]:
        for k in runs[0]:
            np.testing.assert_array_equal(other[k], runs[0][k], err_msg=k)


@pytest.mark.parametrize("where", ["activation", "gathered gradient"])
def test_a_nonfinite_value_the_stage_kernels_meet_themselves_stops_the_pipeline(where):
    # message and update count NaN/inf in their kernels (no fault wrapper involved): a NaN
    # bias makes NaN activations; a NaN already in the gathered gradient is counted when the
    # first backward adds to it, and the worker then finds and names it
    from molpipe.runtime.control import PipelineError
    from molpipe.runtime.nonfinite import NonFiniteError

    net = _network()
    if where == "activation":
        net.stages["update"].params["b_h"][0] = np.nan
    else:
        net.stages["update"].grads["U_h"][0, 0] = np.nan
    with pytest.raises((PipelineError, NonFiniteError)) as err:
        with make_engine("async", net, make_optimizers(net, 1e-2), max_active_keys=2) as engine:
            engine.train(_items(4, 3))
    expected = ("non-finite training forward: stage 'update' output 'H'" if where == "activation"
                else "non-finite training backward: stage 'update' parameter gradient 'U_h'")
    assert expected in str(err.value)
