"""SIGKILL a training process (during a checkpoint write, during the model swap, at a random
moment), then resume: the run directory is never corrupt, the resumed run completes, every
epoch trains on every row once, and the result equals an uninterrupted run bit for bit."""

import os
import signal
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molpipe.io.checkpoint import load_checkpoint
from molpipe.measure.faults import inspect_run_dir, train_code, wait_for
from molpipe.io.model import load_model
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train

ROOT = Path(__file__).resolve().parents[1]
CONFIG = dict(data="freesolv", epochs=4, hidden=16, molecules_per_instance=32, patience=50,
              schedule="reference", trace=False)


def start(out: Path, **env) -> subprocess.Popen:
    return subprocess.Popen([sys.executable, "-c", train_code(str(out), **CONFIG)], cwd=ROOT,
                            env={**os.environ, **env}, stdout=subprocess.DEVNULL,
                            stderr=subprocess.PIPE)


def kill_when(proc: subprocess.Popen, predicate, timeout: float = 40.0) -> None:
    try:
        assert wait_for(lambda: predicate() or proc.poll() is not None, timeout), "never reached"
        assert proc.poll() is None, f"finished before the kill: {proc.stderr.read().decode()}"
        proc.send_signal(signal.SIGKILL)
    finally:
        proc.kill()
        proc.wait(timeout=10)


@pytest.fixture(scope="module")
def uninterrupted(tmp_path_factory):
    out = tmp_path_factory.mktemp("whole")
    train(TrainConfig(**CONFIG), out)
    return load_model(out)[0].state_dict(), load_checkpoint(out)[0]["history"]


def assert_equals_uninterrupted(out: Path, uninterrupted, n_train: int):
    params, history = uninterrupted
    got = load_model(out)[0].state_dict()
    for k in params:
        np.testing.assert_array_equal(got[k], params[k], err_msg=k)
    resumed = load_checkpoint(out)[0]["history"]
    assert len(resumed) == CONFIG["epochs"]
    for a, b in zip(resumed, history):
        assert a["rows_seen"] == b["rows_seen"] == n_train          # every row, once per epoch
        assert a["rows_digest"] == b["rows_digest"]
        assert a["data_order"] == b["data_order"]                    # in the same order
        assert a["train_loss"] == b["train_loss"]


@pytest.mark.slow
def test_killed_during_a_checkpoint_write_resumes_to_the_same_model(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, MOLPIPE_TEST_SLOW_CHECKPOINT="0.4")
    kill_when(proc, lambda: (out / "checkpoints/epoch-0002.tmp/state.json").exists())
    state = inspect_run_dir(out)
    assert state["checkpoint"] == 1 and state["phase"] == "checkpoint write"
    assert state["model"] == "loads"
    report = train(TrainConfig(), out, resume=True)
    assert report["resumed_from_epoch"] == 1
    assert inspect_run_dir(out) == {"checkpoint": 4, "model": "loads", "phase": "finished",
                                    "leftovers": []}
    assert_equals_uninterrupted(out, uninterrupted, report["split_sizes"]["train"])


@pytest.mark.slow
def test_killed_between_the_model_renames_leaves_no_model_then_resumes(tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, MOLPIPE_TEST_SLOW_MODEL="0.4")
    kill_when(proc, lambda: (out / "model.old").exists())
    state = inspect_run_dir(out)
    assert state["model"] == "absent" and state["phase"] == "model write"
    assert state["checkpoint"] is not None
    report = train(TrainConfig(), out, resume=True)
    assert_equals_uninterrupted(out, uninterrupted, report["split_sizes"]["train"])


@pytest.mark.slow
@pytest.mark.parametrize("seed", [0, 1])
def test_killed_at_a_random_moment_resumes_to_the_same_model(seed, tmp_path, uninterrupted):
    out = tmp_path / "run"
    proc = start(out, MOLPIPE_TEST_SLOW_CHECKPOINT="0.1", MOLPIPE_TEST_SLOW_MODEL="0.1")
    # the first checkpoint exists, then a random delay into the remaining epochs
    delay = float(np.random.default_rng(seed).uniform(0.0, 0.6))
    first = out / "checkpoints/epoch-0001"
    kill_when(proc, lambda: first.exists() and (wait_for(lambda: False, delay) or True))
    state = inspect_run_dir(out)                        # raises CorruptRun if unusable
    assert state["checkpoint"] is not None
    report = train(TrainConfig(), out, resume=True)
    assert report["resumed_from_epoch"] == state["checkpoint"]
    assert_equals_uninterrupted(out, uninterrupted, report["split_sizes"]["train"])


def test_checkpoints_are_ordered_by_their_numbers_and_tmp_dirs_are_not_among_them(tmp_path):
    import numpy as np

    from molpipe.io.checkpoint import checkpoints, load_checkpoint, save_checkpoint

    for n in (9999, 10000):
        save_checkpoint(tmp_path, n, {"n": n}, {"a": np.arange(3)})
    (tmp_path / "checkpoints" / "epoch-10001.tmp").mkdir()     # a write a kill cut short
    names = [p.name for p in checkpoints(tmp_path / "checkpoints")]
    assert names == ["epoch-9999", "epoch-10000"]
    state, _, path = load_checkpoint(tmp_path)
    assert state["n"] == 10000 and path.name == "epoch-10000"
    save_checkpoint(tmp_path, 10001, {"n": 10001}, {"a": np.arange(3)})
    assert [p.name for p in checkpoints(tmp_path / "checkpoints")] == ["epoch-10000", "epoch-10001"]
