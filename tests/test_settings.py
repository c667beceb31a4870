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
       ("loss", "nll", "--loss must be one of mse, mve, not 'nll'"),
       ("schedule", "fast", "--schedule must be one of async, sync, reference, not 'fast'"),
       ("max_active_keys", 0, "--max-active-keys must be an integer of at least 1"),
       ("molecules_per_instance", 0, "--molecules-per-instance must be an integer of at least 1"),
       ("stall_timeout", 0.0, "--stall-timeout must be a positive number"),
       ("split", "scafold", "--split must be one of random, scaffold, scaffold-balanced, "
                            "stratified, kmeans, or a JSON file of row indices (FILE.json), "
                            "not 'scafold'"),
       ("split_column", " ", "--split-column must be the name of a column of the data file"),
       ("split_fractions", (0.5, 0.5, 0.5), "split_fractions must be three fractions"),
       ("update_criterion", "atom:3", "--update-criterion must be count, atoms:N, "
                                      "gradnorm:X[:MAXN] or backlog:MAXN, not 'atom:3'"),
       ("update_criterion", "gradnorm:0", "--update-criterion must be count"),
       ("admission", "atoms:0", "--admission must be instances or atoms:N, not 'atoms:0'"),
       ("weight_prediction", "yes", "--weight-prediction must be one of True, False")]


@pytest.mark.parametrize("field, value, message", BAD, ids=[f"{b[0]}={b[1]}" for b in BAD])
def test_a_bad_setting_is_refused_naming_the_option(field, value, message):
    with pytest.raises(SettingsError) as err:
        TrainConfig(**{field: value})
    assert message in str(err.value)


def test_the_defaults_and_optional_nones_pass():
    config = TrainConfig(molecules_per_instance=None, checkpoint_minutes=None, limit=None)
    assert dataclasses.replace(config, epochs=1).epochs == 1


def test_a_split_column_and_a_split_name_are_not_both_given():
    with pytest.raises(SettingsError, match="--split-column 'part' gives the split; leave out "
                                            "--split 'kmeans'"):
        TrainConfig(split="kmeans", split_column="part")
    assert TrainConfig(split="runs/x/split.json").split == "runs/x/split.json"


def test_rounds_below_min_rounds_is_refused_in_the_api():
    with pytest.raises(SettingsError, match="min_rounds"):
        TrainConfig(max_rounds=1, min_rounds=2)


@pytest.mark.parametrize("args, message", [
    (["--epochs", "0"], "--epochs must be an integer of at least 1, not 0"),
    (["--lr", "-1"], "--lr must be a positive number, not -1.0"),
    (["--patience", "0"], "--patience must be an integer of at least 1, not 0"),
    (["--split", "cluster"], "--split must be one of random, scaffold, scaffold-balanced, "
                             "stratified, kmeans, or a JSON file of row indices (FILE.json), "
                             "not 'cluster'")])
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


def test_admission_by_atoms_is_for_the_async_schedule():
    with pytest.raises(SettingsError, match="--admission atoms:100 is for --schedule async"):
        TrainConfig(schedule="sync", admission="atoms:100")
    assert TrainConfig(schedule="reference", admission="atoms:100").admission == "atoms:100"


def test_the_new_pipeline_options_reach_the_settings_and_are_refused_naming_the_choices(tmp_path):
    out = tmp_path / "run"
    result = CliRunner().invoke(app, ["train", "esol", "--out", str(out),
                                      "--update-criterion", "atoms"])
    assert result.exit_code == 2
    assert result.stderr.strip() == ("error: --update-criterion must be count, atoms:N, "
                                     "gradnorm:X[:MAXN] or backlog:MAXN, not 'atoms'")
    result = CliRunner().invoke(app, ["train", "esol", "--out", str(out), "--admission", "all"])
    assert result.stderr.strip() == "error: --admission must be instances or atoms:N, not 'all'"
    assert not out.exists()


def test_session_engine_takes_the_new_options_from_settings_and_overrides():
    from molpipe.training.session import Session

    calls = {}

    class Fake(Session):
        def __init__(self, config):
            self.config = config

    import molpipe.training.session as session_module

    real = session_module.make_engine
    session_module.make_engine = lambda schedule, net, opts, **kw: calls.update(kw) or kw
    try:
        s = Fake(TrainConfig(update_criterion="backlog:4", weight_prediction=True))
        s.engine(type("N", (), {"stages": {}})(), {}, admission="atoms:400")
    finally:
        session_module.make_engine = real
    assert calls["update_criterion"] == "backlog:4" and calls["weight_prediction"] is True
    assert calls["admission"] == "atoms:400"


def test_settings_are_frozen():
    with pytest.raises(dataclasses.FrozenInstanceError):
        TrainConfig().epochs = 3


def _option_defaults(command: str) -> dict:
    import typer.main

    return {p.name: p.default for p in typer.main.get_command(app).commands[command].params}


def test_one_source_of_defaults():
    """The CLI's train, bench and simulate, BenchConfig, the engines and the runtime's
    Pipeline take their defaults from DEFAULTS (runtime/defaults.py for the pipeline's)."""
    import inspect

    from molpipe.measure.bench import BenchConfig
    from molpipe.runtime.pipeline import Pipeline
    from molpipe.training.engines import make_engine
    from molpipe.training.pipeline_engine import PipelineEngine
    from molpipe.training.settings import DEFAULTS

    train = _option_defaults("train")
    renamed = {"rounds": "max_rounds"}
    for name in ("split", "seed", "hidden", "rounds", "aggregation", "propagate", "baseline",
                 "dropout", "epochs", "patience", "lr", "weight_decay", "average",
                 "target_scaling", "schedule", "max_active_keys", "min_update_frequency",
                 "backend", "on_nonfinite", "stall_timeout", "update_criterion", "admission",
                 "weight_prediction"):
        assert train[name] == getattr(DEFAULTS, renamed.get(name, name)), name
    for command in ("bench", "simulate"):
        assert _option_defaults(command)["max_active_keys"] == DEFAULTS.max_active_keys, command
    bench = BenchConfig()
    for name in ("hidden", "max_active_keys", "min_update_frequency", "weight_stashing", "seed",
                 "dtype"):
        assert getattr(bench, name) == getattr(DEFAULTS, name), name
    for fn in (make_engine, PipelineEngine.__init__, Pipeline.__init__):
        params = inspect.signature(fn).parameters
        assert params["max_active_keys"].default == DEFAULTS.max_active_keys, fn
        assert params["min_update_frequency"].default == DEFAULTS.min_update_frequency, fn
        assert params["stall_timeout"].default == DEFAULTS.stall_timeout, fn


def test_a_settings_file_round_trips_and_unknown_keys_are_named(tmp_path):
    import json

    config = TrainConfig(data="freesolv", epochs=7, split_fractions=(0.7, 0.2, 0.1),
                         update_criterion="gradnorm:0.5:8", admission="atoms:400",
                         weight_prediction=True)
    path = tmp_path / "settings.json"
    path.write_text(json.dumps(config.to_dict()))
    assert TrainConfig.from_file(path) == config
    path.write_text(json.dumps({"epochs": 3, "hiden": 4}))
    with pytest.raises(SettingsError, match=r"settings.json: 'hiden' is not a setting \(did you mean 'hidden'\?\)"):
        TrainConfig.from_file(path)
    path.write_text(json.dumps({"epochs": 0}))
    with pytest.raises(SettingsError, match="settings.json: --epochs must be an integer of at least 1"):
        TrainConfig.from_file(path)
    path.write_text("[1]")
    with pytest.raises(SettingsError, match="a JSON object"):
        TrainConfig.from_file(path)


@pytest.mark.slow
def test_train_config_file_with_options_overriding_it(tmp_path):
    """A run writes settings.json; --config reads it back, and options given override it."""
    import json

    from tests.test_cli import assert_one_line_error, run

    first = tmp_path / "first"
    result = run("train", "freesolv", "--epochs", "1", "--hidden", "16", "--quiet", "--out", first)
    assert result.exit_code == 0, result.output
    written = json.loads((first / "settings.json").read_text())
    assert written == json.loads((first / "report.json").read_text())["config"]
    second = tmp_path / "second"
    result = run("train", "--config", first / "settings.json", "--seed", "3", "--quiet",
                 "--out", second)
    assert result.exit_code == 0, result.output
    again = json.loads((second / "settings.json").read_text())
    assert {k for k in written if written[k] != again[k]} == {"seed"}
    assert again["hidden"] == 16 and again["epochs"] == 1 and again["data"] == "freesolv"
    bad = tmp_path / "bad.json"
    bad.write_text(json.dumps({**written, "patience": 0}))
    assert_one_line_error(run("train", "--config", bad, "--out", tmp_path / "x"),
                          "bad.json: --patience must be an integer of at least 1")


def test_config_toml_round_trips_every_setting_and_names_bad_keys_and_values(tmp_path):
    config = TrainConfig(data="lipo", targets=["lipo", "x"], lr=1e-05, dropout=0.1,
                         split_fractions=(0.7, 0.2, 0.1), weight_stashing=False,
                         molecules_per_instance=24, update_criterion="backlog:16",
                         admission="atoms:300", weight_prediction=True)
    path = tmp_path / "config.toml"
    path.write_text(config.to_toml())
    assert TrainConfig.from_file(path) == config
    assert "# task =" in path.read_text()                 # unset: a comment, the default
    path.write_text(config.to_toml() + "epoch = 3\n")
    with pytest.raises(SettingsError, match=r"config.toml: 'epoch' is not a setting "
                                            r"\(did you mean 'epochs'\?\)"):
        TrainConfig.from_file(path)
    path.write_text(config.to_toml().replace("hidden = 128", "hidden = -4"))
    with pytest.raises(SettingsError, match="config.toml: --hidden must be"):
        TrainConfig.from_file(path)
    path.write_text("hidden = \n")
    with pytest.raises(SettingsError, match="config.toml: not a readable TOML settings file"):
        TrainConfig.from_file(path)


def test_a_run_writes_config_toml_that_reproduces_it_with_options_overriding(tmp_path):
    import json

    from tests.test_cli import run

    first = tmp_path / "first"
    result = run("train", "freesolv", "--epochs", "1", "--hidden", "16", "--quiet", "--out", first)
    assert result.exit_code == 0, result.output
    assert TrainConfig.from_file(first / "config.toml") == \
        TrainConfig.from_file(first / "settings.json")
    second = tmp_path / "second"
    result = run("train", "--config", first / "config.toml", "--seed", "3", "--quiet",
                 "--out", second)
    assert result.exit_code == 0, result.output
    a, b = (json.loads((d / "settings.json").read_text()) for d in (first, second))
    assert {k for k in a if a[k] != b[k]} == {"seed"}
