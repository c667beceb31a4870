"""End-to-end training: run directory contents, checkpoints, resume == uninterrupted."""

import csv
import json
from pathlib import Path

import numpy as np
import pytest

from molpipe.io.checkpoint import CheckpointError, load_checkpoint
from molpipe.io.model import load_model
from molpipe.training.settings import TrainConfig
from molpipe.training.train import lr_at, train

SMALL = dict(data="freesolv", epochs=4, hidden=16, molecules_per_instance=32, patience=50)


class Crash(Exception):
    pass


def _crash_after(n_epochs: int):
    def progress(event, **kw):
        if event == "epoch" and kw["epoch"] == n_epochs:
            raise Crash()
    return progress


def _params(run_dir):
    return load_model(run_dir)[0].state_dict()


@pytest.fixture(scope="module")
def reference_run(tmp_path_factory):
    out = tmp_path_factory.mktemp("ref")
    report = train(TrainConfig(schedule="reference", **SMALL), out)
    return out, report


def test_run_directory_holds_model_report_metrics_split(reference_run):
    out, report = reference_run
    for name in ("model/params.npz", "model/config.json", "report.json", "metrics.csv",
                 "split.json", "test_predictions.csv"):
        assert (out / name).stat().st_size > 0, name
    saved = json.loads((out / "report.json").read_text())
    for field in ("dataset", "split", "seed", "schedule", "epochs", "wall_seconds",
                  "train_molecules_per_second", "val", "test", "parameters", "versions"):
        assert field in saved, field
    assert set(saved["test"]["freesolv"]) >= {"rmse", "mae", "r2"}
    assert saved["molecules_per_instance"] == 32
    split = json.loads((out / "split.json").read_text())
    assert not set(split["train"]) & set(split["test"])
    assert len(split["train"]) + len(split["val"]) + len(split["test"]) == 642
    # the saved model predicts what the report's metrics were computed from
    net, config = load_model(out)
    assert config["targets"] == ["freesolv"]
    lines = (out / "metrics.csv").read_text().splitlines()
    assert len(lines) == 1 + saved["epochs"]


def test_same_seed_same_parameters(reference_run, tmp_path):
    out, _ = reference_run
    train(TrainConfig(schedule="reference", **SMALL), tmp_path)
    a, b = _params(out), _params(tmp_path)
    assert all(np.array_equal(a[k], b[k]) for k in a)


@pytest.mark.parametrize("schedule, average", [("reference", 0.0), ("sync", 0.0),
                                               ("reference", 0.9)])
def test_resumed_run_equals_uninterrupted_run(schedule, average, tmp_path):
    whole = train(TrainConfig(schedule=schedule, average=average, **SMALL), tmp_path / "whole")
    with pytest.raises(Crash):
        train(TrainConfig(schedule=schedule, average=average, **SMALL), tmp_path / "cut",
              progress=_crash_after(2))
    state, _, path = load_checkpoint(tmp_path / "cut")
    assert state["epoch"] == 2 and path.name == "epoch-0002"
    resumed = train(TrainConfig(data="ignored"), tmp_path / "cut", resume=True)
    assert resumed["resumed_from_epoch"] == 2 and resumed["epochs"] == 4
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "cut")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["test"] == whole["test"]


def test_a_damaged_checkpoint_falls_back_to_the_previous_one(reference_run):
    out, _ = reference_run
    newest = sorted((out / "checkpoints").glob("epoch-*"))[-1]
    blob = newest / "arrays.npz"
    data = bytearray(blob.read_bytes())
    data[len(data) // 2] ^= 0xFF
    blob.write_bytes(bytes(data))
    state, _, path = load_checkpoint(out)
    assert path != newest and state["epoch"] == int(newest.name[-4:]) - 1


def test_no_checkpoint_is_a_clear_error(tmp_path):
    with pytest.raises(CheckpointError, match="no checkpoint"):
        load_checkpoint(tmp_path)


def test_lr_schedule_warms_up_then_decays():
    lrs = [lr_at(e, 10, 1e-3) for e in range(10)]
    assert lrs[0] == pytest.approx(1e-4) and max(lrs) == pytest.approx(1e-3)
    assert lrs[-1] == pytest.approx(1e-4)
    assert all(a >= b for a, b in zip(lrs[2:], lrs[3:]))


def _crash_at_instance(epoch_to_crash: int, n_instances: int):
    seen = {"epoch": 1, "n": 0}

    def progress(event, **kw):
        if event == "epoch":
            seen["epoch"], seen["n"] = kw["epoch"] + 1, 0
        elif event == "instance" and seen["epoch"] == epoch_to_crash:
            seen["n"] += 1
            if seen["n"] == n_instances:
                raise Crash()
    return progress


@pytest.mark.parametrize("schedule", ["reference", "sync"])
def test_resume_from_inside_an_epoch_equals_uninterrupted_run(schedule, tmp_path):
    cfg = dict(SMALL, molecules_per_instance=8, epochs=3)          # 65 instances an epoch
    whole = train(TrainConfig(schedule=schedule, **cfg), tmp_path / "whole")
    every = dict(cfg, checkpoint_minutes=1e-9)                      # after every chunk of 32
    with pytest.raises(Crash):
        train(TrainConfig(schedule=schedule, **every), tmp_path / "cut",
              progress=_crash_at_instance(2, 50))
    state, _, path = load_checkpoint(tmp_path / "cut")
    assert path.name == "epoch-0001-000032" and state["partial"]["position"] == 32
    resumed = train(TrainConfig(data="ignored"), tmp_path / "cut", resume=True)
    a, b = _params(tmp_path / "whole"), _params(tmp_path / "cut")
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["test"] == whole["test"]
    # the interrupted epoch still trained on every row exactly once
    with open(tmp_path / "cut" / "metrics.csv") as f:
        epochs = list(csv.DictReader(f))
    assert [int(e["rows_seen"]) for e in epochs] == [514, 514, 514]


def test_with_averaging_the_model_is_the_average_of_its_best_epoch(tmp_path):
    """The saved model is each stage's parameter average, not its live parameters."""
    cfg = dict(SMALL, epochs=1)              # the best epoch is the checkpoint's
    report = train(TrainConfig(schedule="reference", average=0.9, **cfg), tmp_path / "avg")
    state, arrays, _ = load_checkpoint(tmp_path / "avg")
    model = _params(tmp_path / "avg")
    averaged = 0
    for k, v in model.items():
        stage, name = k.split(".", 1)
        if f"opt/{stage}/avg.{name}" in arrays:
            np.testing.assert_array_equal(v, arrays[f"opt/{stage}/avg.{name}"], err_msg=k)
            assert not np.array_equal(v, arrays[f"net/{k}"]), k
            averaged += 1
    assert averaged == sum(len(s.params) for s in load_model(tmp_path / "avg")[0].stages.values())
    plain = train(TrainConfig(schedule="reference", **cfg), tmp_path / "plain")
    assert plain["test"] != report["test"]


@pytest.mark.slow
def test_default_instance_size_packs_small_molecules_by_atoms(tmp_path):
    # the first 2,000 QM9 molecules (1,600 to train on, ~8.5 heavy atoms): ~25 make an instance
    report = train(TrainConfig(data="qm9", targets=["gap"], limit=2000, epochs=1, hidden=16), tmp_path)
    assert report["config"]["molecules_per_instance"] is None
    assert 20 <= report["molecules_per_instance"] <= 30


def test_an_additive_target_is_carried_by_the_baseline(tmp_path):
    """A target that is a sum over atoms (here 2.5 per heavy atom + 1 per ring atom) is
    what the additive baseline fits: report.json says so and the test error is tiny at
    once; without the baseline the same short run is far off."""
    from rdkit import Chem

    rows = []
    for line in (Path(__file__).resolve().parents[1] / "datasets" / "freesolv.csv").read_text().splitlines()[1:300]:
        smi = line.split(",")[0]
        mol = Chem.MolFromSmiles(smi)
        if mol is not None:
            ring = sum(a.IsInRing() for a in mol.GetAtoms())
            rows.append(f"{smi},{2.5 * mol.GetNumAtoms() + ring:.4f},{len(rows) % 7}")
    data = tmp_path / "additive.csv"
    data.write_text("smiles,y,noise\n" + "\n".join(rows) + "\n")
    auto = train(TrainConfig(data=str(data), epochs=1, hidden=16, schedule="reference",
                             cache_root=str(tmp_path / "c")), tmp_path / "auto")
    # the default: the baseline for the target it carries, not for the one it cannot
    assert auto["baseline"]["kind"] == "auto" and auto["baseline"]["used"] == ["y"]
    assert auto["baseline"]["train_r2"]["noise"] < 0.5
    data.write_text("smiles,y\n" + "\n".join(r.rsplit(",", 1)[0] for r in rows) + "\n")
    runs = {}
    for baseline in ("additive", "none"):
        runs[baseline] = train(TrainConfig(data=str(data), epochs=2, hidden=16, baseline=baseline,
                                           schedule="reference", cache_root=str(tmp_path / "c")),
                               tmp_path / baseline)
    with_, without = runs["additive"], runs["none"]
    assert with_["baseline"]["kind"] == "additive" and without["baseline"] == {"kind": "none"}
    assert with_["baseline"]["used"] == ["y"]
    assert with_["baseline"]["train_r2"]["y"] > 0.999
    assert with_["test"]["y"]["rmse"] < 0.2 < without["test"]["y"]["rmse"]
    saved = json.loads((tmp_path / "additive" / "report.json").read_text())
    assert saved["config"]["baseline"] == "additive"
