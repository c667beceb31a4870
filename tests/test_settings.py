"""A run's settings are checked before any work; each error names the option and its values."""

import dataclasses

import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.training.settings import SettingsError, TrainConfig

BAD = [("epochs", 0, "--epochs must be an integer of at least 1, not 0"),
       ("patience", 0, "--patience must be an integer of at least 1"),
       ("hidden", -3, "--hidden must be an integer of at least 1, not -3"),
       ("max_rounds", 0, "--rounds must be an integer of at least 1"),
       ("lr", -1.0, "--lr must be a positive number, not -1.0"),
       ("lr", float("nan"), "--lr must be a positive number, not nan"),
       ("dropout", 1.0, "--dropout must be a number in [0, 1)"),
       ("weight_decay", -0.1, "--weight-decay must be zero or a positive number"),
       ("aggregation", "max", "--aggregation must be one of mean, sum, norm, attention, mean+norm"),
       ("baseline", "linear", "--baseline must be one of auto, additive, none"),
       ("schedule", "fast", "--schedule must be one of async, sync, reference, not 'fast'"),
       ("max_active_keys", 0, "--max-active-keys must be an integer of at least 1"),
       ("molecules_per_instance", 0, "--molecules-per-instance must be an integer of at least 1"),
       ("stall_timeout", 0.0, "--stall-timeout must be a positive number"),
       ("split_fractions", (0.5, 0.5, 0.5), "split_fractions must be three fractions")]


@pytest.mark.parametrize("field, value, message", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_a_bad_setting_is_refused_naming_the_option(field, value, message):
    with pytest.raises(SettingsError) as err:
        TrainConfig(**{field: value})
    assert message in str(err.value)


def test_the_defaults_and_optional_nones_pass():
    config = TrainConfig(molecules_per_instance=None, checkpoint_minutes=None, limit=None)
    assert dataclasses.replace(config, epochs=1).epochs == 1


def test_rounds_below_min_rounds_is_refused_in_the_api():
    with pytest.raises(SettingsError, match="min_rounds"):
        TrainConfig(max_rounds=1, min_rounds=2)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be an integer of at least 1, not 0"),
    (["--lr", "-1"], "--lr must be a positive number, not -1.0"),
    (["--patience", "0"], "--patience must be an integer of at least 1, not 0")])
def test_the_command_refuses_before_any_work(tmp_path, args, message):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "esol", "--out", str(out), *args])
    assert result.exit_code == 2                # the CLI's one-line error (tests/test_cli.py)
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0] == f"error: {message}"
    assert not out.exists()                    # nothing was read, trained or written


def test_one_round_is_a_setting_the_command_accepts(tmp_path):
    result = CliRunner().invoke(app, ["train", "freesolv", "--rounds", "1", "--epochs", "1",
                                      "--hidden", "8", "--quiet", "--out", str(tmp_path / "r")])
    assert result.exit_code == 0, result.output
