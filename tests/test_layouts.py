"""Layouts of the pipeline's workers: fused (one worker) and replicas on shared parameters."""

import numpy as np
import pytest

from molpipe.runtime.replicas import layout_placement, replicated_placement
from molpipe.training.engines import make_engine, make_optimizers
from molpipe.training.settings import SettingsError, TrainConfig
from tests.test_engine import _items, _network, _trained


@pytest.mark.parametrize("layout, replicas", [("fused", None), ("replicas", 2), ("replicas", 3)])
def test_every_layout_at_mak1_muf1_is_the_reference_trainer(layout, replicas):
    """One instance in flight: the replicas take turns on one set of parameters and one
    optimizer per stage, and train exactly what the sequential trainer trains."""
    items = _items(80, 3, seed=11)
    ref, ref_res = _trained("reference", items)
    got, res = _trained("async", items, max_active_keys=1, min_update_frequency=1,
                        layout=layout, replicas=replicas)
    for k in ref:
        np.testing.assert_allclose(got[k], ref[k], rtol=0, atol=1e-9, err_msg=k)
    for key in ref_res.losses:
        assert res.losses[key] == pytest.approx(ref_res.losses[key], abs=1e-9)
    n = {"fused": 1, "replicas": replicas}[layout]
    assert len(res.utilization) == n
    # every replica worked (instances alternate between replicas at mak 1)
    assert all(u > 0 for u in res.utilization.values())


def test_replicas_with_instances_in_flight_train_one_set_of_parameters():
    items = _items(60, 4, seed=2)
    net = _network("float32")
    before = {k: v.copy() for k, v in net.state_dict().items()}
    opts = make_optimizers(net, 1e-3)
    with make_engine("async", net, opts, max_active_keys=4, layout="replicas",
                     replicas=2) as engine:
        res = engine.train(items)
        pred = engine.predict(items[:10])
        names = sorted(engine.worker_names.values())
    assert names == ["all", "all#1"]
    assert sorted(res.losses) == [k for k, _ in items]
    assert all(np.isfinite(v) for v in res.losses.values())
    assert sorted(pred.preds) == list(range(10))
    # both replicas stepped the one optimizer of each stage: 60 instances, muf 1
    assert opts["readout"].t == 60
    assert all(stage.n_cached == 0 for stage in net.stages.values())
    moved = net.state_dict()
    assert max(np.abs(moved[k] - before[k]).max() for k in before) > 1e-4
    # the network's own arrays were trained (a replica's twins share them)
    assert np.array_equal(net.stages["readout"].params["W_2"], moved["readout.W_2"])


def test_a_replicas_error_stops_the_run_cleanly():
    from molpipe.runtime.control import PipelineError

    items = _items(20, 3, seed=3)
    net = _network("float32")
    with make_engine("async", net, make_optimizers(net, 1e-3), max_active_keys=4,
                     layout="replicas", replicas=2, stall_timeout=20) as engine:
        bad = net.stages["readout"]
        calls = {"n": 0}
        real = type(bad).forward

        def flaky(self, key, step, x, inst, train):
            calls["n"] += 1
            if calls["n"] == 7:
                raise RuntimeError("injected")
            return real(self, key, step, x, inst, train)

        type(bad).forward = flaky
        try:
            with pytest.raises(PipelineError, match="injected"):
                engine.train(items)
        finally:
            type(bad).forward = real


def test_layout_names_and_routing():
    stages = ["embed", "message", "loss"]
    assert layout_placement("fused", stages) == ({s: 0 for s in stages}, 1)
    assert layout_placement("replicas", stages) == ({s: 0 for s in stages}, 2)
    assert layout_placement("replicas", stages, replicas=4)[1] == 4
    assert layout_placement("stages", stages) == (None, 1)
    with pytest.raises(ValueError, match="choices: auto, stages, fused, replicas"):
        layout_placement("ring", stages)
    table = replicated_placement({"embed": 0, "message": 1, "loss": 1}, 2)
    assert table[("message", 1)] == 3 and table[("embed", 1)] == 2 and table["loss"] == 1


def test_replicas_refuse_the_sync_schedule_and_mpi():
    with pytest.raises(SettingsError, match="replicas needs the async schedule"):
        TrainConfig(data="esol", layout="replicas", schedule="sync")
    with pytest.raises(SettingsError, match="--layout"):
        TrainConfig(data="esol", layout="ring")
    net = _network()
    with pytest.raises(ValueError, match="replicas need the async schedule"):
        make_engine("sync", net, make_optimizers(net, 1e-3), layout="replicas")


def test_a_backward_runs_on_the_weights_its_forward_read_though_another_replica_stepped():
    """Weight stashing across replicas: replica 1 steps the shared optimizer between replica
    0's forward and its backward; that backward sees the forward's version, then it is freed."""
    from molpipe.nn.optim import Adam
    from molpipe.runtime.replicas import SharedOptimizer
    from molpipe.runtime.stage import Stage

    stage = Stage({"W": np.ones(3)})
    twin = stage.replica()
    shared = SharedOptimizer(Adam(stage.params, lr=0.1), stage.params)
    mine, other = shared.stash_view(stage), shared.stash_view(twin)
    mine.forward("a", 0)
    other.forward("b", 0)
    shared.step({"W": np.ones(3)}, 1.0)              # b's replica updates first
    with other.backward("b", 0):
        seen_b = twin.params["W"].copy()
    assert np.allclose(seen_b, 1.0)                   # the version b's forward read
    assert mine.n_versions == 1                       # still held for a
    with mine.backward("a", 0):
        assert np.allclose(stage.params["W"], 1.0)
    assert not np.allclose(stage.params["W"], 1.0)    # live weights moved; copy released
    assert mine.n_versions == 0 and shared.version == 1
    mine.forward("c", 0)                              # no step since: the live weights
    with mine.backward("c", 0):
        assert stage.params is twin.params


def test_bench_names_a_layout_and_lists_the_choices_of_an_unknown_one():
    from molpipe.measure.bench import schedule_settings

    assert schedule_settings("async-stages")["engine"] == {"layout": "stages"}
    assert schedule_settings("async-mak8-replicas3")["engine"] == {
        "max_active_keys": 8, "layout": "replicas", "replicas": 3}
    assert schedule_settings("async[layout=fused]")["engine"] == {"layout": "fused"}
    net = _network()
    with pytest.raises(ValueError, match="choices: auto, stages, fused, replicas"):
        make_engine("async", net, make_optimizers(net, 1e-3), layout="ring")


def test_a_frozen_stage_stays_as_it_was_under_replicas():
    """--freeze gives a stage an optimizer that holds nothing: the stash across replicas still
    copies (and swaps in) the stage's own parameters."""
    from molpipe.nn.optim import Frozen

    items = _items(40, 3, seed=8)
    net = _network("float32")
    opts = make_optimizers(net, 1e-2, freeze=("embed", "message"))
    opts = {**opts, "embed": Frozen(), "message": Frozen()}
    before = {k: v.copy() for k, v in net.state_dict().items()}
    with make_engine("async", net, opts, max_active_keys=4, layout="replicas",
                     weight_stashing=True) as engine:
        engine.train(items)
    after = net.state_dict()
    for k in after:
        if k.split(".")[0] in ("embed", "message"):
            np.testing.assert_array_equal(after[k], before[k], err_msg=k)
    assert not np.array_equal(after["update.U_h"], before["update.U_h"])


def test_simulate_predicts_replicas_and_refuses_an_unknown_layout():
    from typer.testing import CliRunner

    from cli import app

    runner = CliRunner()
    result = runner.invoke(app, ["simulate", "freesolv", "--layout", "replicas", "--workers", "1",
                                 "--workers", "2"])
    assert result.exit_code == 0, result.output
    assert "replicas" in result.output and "molecules/s" in result.output
    bad = runner.invoke(app, ["simulate", "freesolv", "--layout", "ring"])
    assert bad.exit_code != 0 and "choices: stages, replicas" in bad.output
