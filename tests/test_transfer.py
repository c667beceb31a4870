"""Transfer (--from-model, --freeze): what is copied, what starts fresh, what stays frozen,
and the errors that name both models' values."""

import dataclasses
import json

import numpy as np
import pytest

from molpipe.io.model import ModelError, load_model
from molpipe.training.session import Session
from molpipe.training.settings import SettingsError, TrainConfig
from molpipe.training.train import train
from tests.test_cli import assert_one_line_error, run

SOURCE = dict(data="esol", limit=200, epochs=2, hidden=16, molecules_per_instance=32)
TARGET = dict(data="freesolv", limit=150, epochs=2, hidden=16, molecules_per_instance=32,
              seed=3)


@pytest.fixture(scope="module")
def source(tmp_path_factory):
    out = tmp_path_factory.mktemp("source")
    train(TrainConfig(schedule="reference", **SOURCE), out)
    return out


def _initial(config: TrainConfig):
    session = Session(config)
    session.fit_scaling()
    return session, session.network()


def test_copied_stages_start_as_the_source_and_a_new_target_gets_a_fresh_head(source):
    theirs = load_model(source)[0].state_dict()
    session, net = _initial(TrainConfig(from_model=str(source), **TARGET))
    ours = net.state_dict()
    done = session.transfer
    assert done["head"] == "reinitialized" and done["source_targets"] == ["measured_log_solubility"]
    assert sorted(done["reinitialized"]) == ["readout.W_2", "readout.b_2"]
    for key in done["copied"]:
        np.testing.assert_array_equal(ours[key], theirs[key])
    assert {k.split(".")[0] for k in done["copied"]} >= {"embed", "message", "update", "readout"}
    # the head is the fresh initialization of a run without --from-model (same seed)
    fresh = _initial(TrainConfig(**TARGET))[1].state_dict()
    for key in ("readout.W_2", "readout.b_2"):
        np.testing.assert_array_equal(ours[key], fresh[key])
    assert not np.array_equal(ours["embed.W_v"], fresh["embed.W_v"])
    # scaling is the new data's, not the source's
    assert not np.allclose(ours["loss.mean"], theirs["loss.mean"])
    # the same targets keep the head too
    session, net = _initial(TrainConfig(from_model=str(source), **{**SOURCE, "seed": 5}))
    assert session.transfer["head"] == "copied" and session.transfer["reinitialized"] == []
    np.testing.assert_array_equal(net.state_dict()["readout.W_2"], theirs["readout.W_2"])


@pytest.mark.parametrize("schedule", ["reference", "async"])
def test_frozen_stages_do_not_change_while_the_rest_trains(source, tmp_path, schedule):
    theirs = load_model(source)[0].state_dict()
    config = TrainConfig(from_model=str(source), freeze=("embed", "message"),
                         schedule=schedule, patience=50, **TARGET)
    report = train(config, tmp_path / "run")
    after = load_model(tmp_path / "run")[0].state_dict()
    for key in after:
        stage = key.split(".")[0]
        if stage in ("embed", "message"):
            np.testing.assert_array_equal(after[key], theirs[key])
        elif stage == "update":
            assert not np.array_equal(after[key], theirs[key]), key
    assert report["from_model"]["frozen"] == ["embed", "message"]
    saved = json.loads((tmp_path / "run" / "report.json").read_text())
    assert saved["from_model"]["path"] == str(source)
    assert TrainConfig.from_file(tmp_path / "run" / "config.toml") == config


def test_an_incompatible_model_is_an_error_naming_both(source, tmp_path):
    with pytest.raises(ModelError, match=r"its hidden size is 16, this run's 32; .*"
                                         r"\(give --hidden 16\)"):
        _initial(TrainConfig(from_model=str(source), **{**TARGET, "hidden": 32}))
    with pytest.raises(ModelError, match="its propagation is split, this run's bond"):
        _initial(TrainConfig(from_model=str(source), propagate="bond", **TARGET))
    altered = tmp_path / "altered"
    altered.mkdir()
    for name in ("params.npz", "domain.npz"):
        (altered / name).write_bytes((source / "model" / name).read_bytes())
    doc = json.loads((source / "model" / "config.json").read_text())
    (altered / "config.json").write_text(json.dumps({**doc, "featurizer_version": 0}))
    with pytest.raises(ModelError, match=r"its featurizer version is 0, this run's \d+"):
        _initial(TrainConfig(from_model=str(altered), **TARGET))
    with pytest.raises(ModelError, match="not a molpipe model"):
        _initial(TrainConfig(from_model=str(tmp_path), **TARGET))


def test_freeze_names_are_checked(source):
    with pytest.raises(SettingsError, match="--freeze: 'embedding' is not a stage; the stages: "
                                            "embed, message, update, propagate, rings, readout"):
        TrainConfig(from_model=str(source), freeze=("embedding",))
    with pytest.raises(SettingsError, match="needs --from-model"):
        TrainConfig(freeze=("embed",))
    config = TrainConfig(from_model=str(source), freeze=("propagate",), **TARGET)
    session, net = _initial(config)
    with pytest.raises(ValueError, match="--freeze 'propagate': this network has no stage "
                                         "'propagate' with parameters; its stages: embed, "
                                         "message, update, rings, readout"):
        session.optimizers(net)
    frozen = dataclasses.replace(config, freeze=("embed",))
    session.config = frozen
    assert "embed" not in session.optimizers(net) and "message" in session.optimizers(net)


def test_the_command_line(source, tmp_path):
    result = run("train", "freesolv", "--from-model", source, "--freeze", "embed,mesage",
                 "--out", tmp_path / "r")
    assert_one_line_error(result, "--freeze: 'mesage' is not a stage; the stages: embed")
    result = run("train", "freesolv", "--from-model", source, "--hidden", "8", "--epochs", "1",
                 "--quiet", "--out", tmp_path / "r")
    assert_one_line_error(result, "its hidden size is 16, this run's 8", "give --hidden 16")
