"""Worker faults through ``train``: an exception, NaN/inf and a stall in one worker at a random
instance stop the run with one clear line (worker, stage, key, SMILES) in bounded time, end
every thread and leave the last good checkpoint loadable; ``on_nonfinite="skip"`` skips."""

import threading
import time

import numpy as np
import pytest
from typer.testing import CliRunner

import molpipe.training.session as session_mod
from cli import app
from molpipe.io.checkpoint import load_checkpoint
from molpipe.measure.faults import inject, wait_for
from molpipe.io.model import load_model
from molpipe.runtime.control import PipelineError
from molpipe.runtime.nonfinite import NonFiniteError
from molpipe.training.settings import TrainConfig
from molpipe.training.session import prepare
from molpipe.training.train import train

SMALL = dict(data="freesolv", epochs=3, hidden=16, molecules_per_instance=32, patience=50,
             stall_timeout=2.0, trace=False)


def worker_threads():
    return [t for t in threading.enumerate() if t.name.startswith("molpipe-worker") and t.is_alive()]


@pytest.fixture(scope="module", autouse=True)
def smiles(tmp_path_factory):
    # compile (or load) every numba kernel first: a cold compile inside a worker would
    # trip the tests' 2 s watchdog
    train(TrainConfig(**{**SMALL, "epochs": 1, "schedule": "reference"}),
          tmp_path_factory.mktemp("warm"))
    return prepare(TrainConfig(**SMALL)).store.smiles


def faulty(monkeypatch, stage: str, kind: str, at: int, epoch: int = 2, **kw):
    """Make ``train`` build a network whose ``stage`` fails (``kind``) at its ``at``-th
    training forward of epoch ``epoch``; returns (holder of the fault, progress callback)."""
    holder = {}
    build = session_mod.build_network

    def build_faulty(*args, **kwargs):
        net = build(*args, **kwargs)
        holder["net"] = net
        holder["fault"] = inject(net.stages[stage], kind, **kw)
        return net

    def progress(event, **info):
        if event == "epoch" and info["epoch"] == epoch - 1:
            holder["fault"].arm(at)

    monkeypatch.setattr(session_mod, "build_network", build_faulty)
    return holder, progress


def assert_last_good_checkpoint(out, epoch: int):
    state, arrays, path = load_checkpoint(out)
    assert state["epoch"] == epoch and path.name == f"epoch-{epoch:04d}"
    assert all(np.isfinite(a).all() for a in arrays.values() if a.dtype.kind == "f")
    net, _ = load_model(out)                  # model/ of the best epoch so far
    assert all(np.isfinite(v).all() for v in net.state_dict().values())


@pytest.mark.parametrize("kind, stage, seed", [("raise", "update", 0), ("raise", "readout", 1),
                                               ("nan", "message", 2), ("inf", "embed", 3)])
def test_worker_fault_stops_the_run_with_one_line_naming_worker_key_smiles(
        kind, stage, seed, monkeypatch, tmp_path, smiles):
    at = int(np.random.default_rng(seed).integers(0, 15))
    holder, progress = faulty(monkeypatch, stage, kind, at)
    t0 = time.perf_counter()
    with pytest.raises(PipelineError) as err:
        train(TrainConfig(schedule="async", max_active_keys=4, **SMALL), tmp_path, progress=progress)
    assert time.perf_counter() - t0 < 30
    (key, rows), = holder["fault"].fired
    text = str(err.value)
    assert "\n" not in text
    assert f"stage {stage!r}" in text and f"key {key}" in text and "worker " in text
    assert smiles[rows[0]] in text
    assert ("InjectedFault" in text) if kind == "raise" else ("non-finite" in text)
    assert wait_for(lambda: not worker_threads(), 5.0)
    assert_last_good_checkpoint(tmp_path, 1)


@pytest.mark.slow
def test_a_stall_trips_the_watchdog_within_its_timeout_then_every_thread_ends(
        monkeypatch, tmp_path, smiles):
    at = int(np.random.default_rng(7).integers(0, 15))
    holder, progress = faulty(monkeypatch, "update", "stall", at, stall_seconds=30.0)
    t0 = time.perf_counter()
    with pytest.raises(PipelineError) as err:
        train(TrainConfig(schedule="async", max_active_keys=4, **SMALL), tmp_path, progress=progress)
    elapsed = time.perf_counter() - t0
    (key, rows), = holder["fault"].fired
    text = str(err.value)
    assert "\n" not in text and "stalled" in text and "'update'" in text
    assert f"key {key}" in text and smiles[rows[0]] in text
    assert elapsed < 2.0 + 2.0 + 5.0      # stall_timeout + abort join + two epochs' work
    holder["fault"].release()             # the stuck worker leaves its stage ...
    assert wait_for(lambda: not worker_threads(), 5.0)   # ... and its loop
    assert_last_good_checkpoint(tmp_path, 1)


@pytest.mark.parametrize("direction", ["forward", "backward"])
@pytest.mark.parametrize("schedule", ["async", "reference"])
def test_reference_and_async_stop_on_nan_by_default(schedule, direction, monkeypatch, tmp_path,
                                                   smiles):
    # NaN in an activation, or in a gradient after a finite forward and loss
    holder, progress = faulty(monkeypatch, "readout", "nan", 3, direction=direction)
    with pytest.raises((PipelineError, NonFiniteError)) as err:
        train(TrainConfig(schedule=schedule, **SMALL), tmp_path, progress=progress)
    (key, rows), = holder["fault"].fired
    assert f"key {key}" in str(err.value) and smiles[rows[0]] in str(err.value)
    assert_last_good_checkpoint(tmp_path, 1)


@pytest.mark.parametrize("schedule", ["async", "sync", "reference"])
def test_skip_drops_the_nonfinite_instances_and_saves_nothing_poisoned(schedule, monkeypatch, tmp_path):
    holder, progress = faulty(monkeypatch, "update", "nan", 2, times=2)
    report = train(TrainConfig(schedule=schedule, on_nonfinite="skip", **SMALL), tmp_path,
                   progress=progress)
    fired = holder["fault"].fired
    assert len(fired) == 2 and report["skipped_instances"] == 2
    history = load_checkpoint(tmp_path)[0]["history"]
    n_train = report["split_sizes"]["train"]
    assert [h["rows_seen"] for h in history] == [n_train, n_train - sum(len(r) for _, r in fired),
                                                 n_train]
    assert [h["skipped_instances"] for h in history] == [0, 2, 0]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert_last_good_checkpoint(tmp_path, 3)
    # the pipeline dropped the skipped instances' caches: nothing left behind
    assert all(s.n_cached == 0 for s in holder["net"].stages.values())


@pytest.mark.parametrize("schedule", ["async", "sync", "reference"])
def test_skip_drops_an_instance_whose_backward_turns_nonfinite(schedule, monkeypatch, tmp_path):
    # a finite forward and loss, then NaN in readout's input gradient: without the gradient
    # check the NaN would reach update's parameters and every later instance would be skipped
    holder, progress = faulty(monkeypatch, "readout", "nan", 1, direction="backward")
    report = train(TrainConfig(schedule=schedule, on_nonfinite="skip", **SMALL), tmp_path,
                   progress=progress)
    (key, rows), = holder["fault"].fired
    history = load_checkpoint(tmp_path)[0]["history"]
    assert [h["skipped_instances"] for h in history] == [0, 1, 0]
    n_train = report["split_sizes"]["train"]
    assert [h["rows_seen"] for h in history] == [n_train, n_train - len(rows), n_train]
    assert all(np.isfinite(h["train_loss"]) for h in history)
    assert all(np.isfinite(a).all() for a in holder["net"].state_dict().values())
    assert all(s.n_cached == 0 for s in holder["net"].stages.values())
    assert_last_good_checkpoint(tmp_path, 3)


def test_nonfinite_parameters_are_never_checkpointed(monkeypatch, tmp_path):
    holder = {}
    build = session_mod.build_network

    def build_kept(*args, **kwargs):
        holder["net"] = build(*args, **kwargs)
        return holder["net"]

    def progress(event, **info):   # an optimizer gone wrong during epoch 2
        if event == "epoch" and info["epoch"] == 1:
            holder["armed"] = True
        if event == "instance" and holder.get("armed"):
            holder["net"].stages["readout"].params[next(iter(holder["net"].stages["readout"].params))][0] = np.inf

    monkeypatch.setattr(session_mod, "build_network", build_kept)
    with pytest.raises(NonFiniteError, match="epoch 2: after training, parameter 'readout"):
        train(TrainConfig(schedule="reference", on_nonfinite="skip", **SMALL), tmp_path,
              progress=progress)
    assert_last_good_checkpoint(tmp_path, 1)


def test_cli_train_prints_a_worker_fault_as_one_line_and_exits_2(monkeypatch, tmp_path, smiles):
    holder, _ = faulty(monkeypatch, "update", "nan", 0)
    holder_arm = session_mod.build_network

    def build_armed(*args, **kwargs):
        net = holder_arm(*args, **kwargs)
        holder["fault"].arm(4)
        return net

    monkeypatch.setattr(session_mod, "build_network", build_armed)
    result = CliRunner().invoke(app, ["train", "freesolv", "--epochs", "2", "--hidden", "16",
                                      "--molecules-per-instance", "32", "--quiet",
                                      "--out", str(tmp_path / "run")])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    (key, rows), = holder["fault"].fired
    assert f"key {key}" in lines[0] and "non-finite" in lines[0] and smiles[rows[0]] in lines[0]
    bad = CliRunner().invoke(app, ["train", "freesolv", "--on-nonfinite", "ignore",
                                   "--out", str(tmp_path / "x")])
    assert bad.exit_code == 2 and "--on-nonfinite" in bad.stderr


def test_reproducible_sync_parameters_and_async_data_order(tmp_path):
    cfg = dict(SMALL, epochs=2)
    sync = [train(TrainConfig(schedule="sync", max_active_keys=4, **cfg), tmp_path / f"s{i}")
            for i in range(2)]
    a, b = (load_model(tmp_path / f"s{i}")[0].state_dict() for i in range(2))
    assert all(np.array_equal(a[k], b[k]) for k in a)
    assert sync[0]["reproducible"] == {"parameters": True, "data_order": True}
    runs = [train(TrainConfig(schedule="async", max_active_keys=4, **cfg), tmp_path / f"a{i}")
            for i in range(2)]
    other = train(TrainConfig(schedule="async", max_active_keys=4, **{**cfg, "seed": 1}),
                  tmp_path / "a-seed1")
    orders = [[h["data_order"] for h in load_checkpoint(tmp_path / d)[0]["history"]]
              for d in ("a0", "a1", "a-seed1")]
    assert orders[0] == orders[1] and orders[0] != orders[2]
    assert len(set(orders[0])) == 2                     # every epoch its own order
    assert runs[0]["reproducible"] == {"parameters": False, "data_order": True}
    assert other["reproducible"]["data_order"]
