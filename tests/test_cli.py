"""CLI: preprocess and datasets; errors are one red line, exit code 2, no traceback."""

import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.data.store import GraphStore

runner = CliRunner()


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def assert_one_line_error(result, *fragments):
    assert result.exit_code == 2, result.output
    assert isinstance(result.exception, SystemExit)
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for frag in fragments:
        assert frag in lines[0]


def test_no_args_shows_help():
    result = run()
    assert "preprocess" in result.output and "datasets" in result.output


def test_datasets_table():
    result = run("datasets")
    assert result.exit_code == 0
    for name in ("esol", "freesolv", "lipo", "qm9", "14862"):
        assert name in result.output


def test_preprocess(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("Smiles,logS,note\nCCO,1.0,x\nC1CC,2.0,y\nc1ccccc1,3.0,z\n")
    result = run("preprocess", src, "-o", tmp_path / "store", "--jobs", "1")
    assert result.exit_code == 0, result.output
    assert "3 rows read, 2 kept, 1 rejected" in result.output
    assert "rejects.csv" in result.output
    store = GraphStore.open(tmp_path / "store")
    assert store.target_names == ["logS"] and len(store) == 2


def test_preprocess_options(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("mol,a,b\nCCCCCCCCCC,1,2\n")
    result = run("preprocess", src, "-o", tmp_path / "s", "--smiles-column", "mol",
                 "--target", "b", "--target", "a", "--max-rounds", "3", "--jobs", "1")
    assert result.exit_code == 0, result.output
    store = GraphStore.open(tmp_path / "s")
    assert store.target_names == ["b", "a"] and store.n_rounds.tolist() == [3]


@pytest.mark.parametrize("content, extra, fragments", [
    (None, [], ["no such file"]),
    (b"smiles,y\nCCO,1\n", ["--smiles-column", "mol"], ["no SMILES column 'mol'", "'smiles', 'y'"]),
    (b"smiles,y\nCCO,1\n", ["--target", "z"], ["no target column 'z'"]),
    (b"", [], ["empty file"]),
    ("smiles,y\nCC\xe9,1\n".encode("latin-1"), [], ["not UTF-8"]),
])
def test_preprocess_errors(tmp_path, content, extra, fragments):
    src = tmp_path / "in.csv"
    if content is not None:
        src.write_bytes(content)
    result = run("preprocess", src, "-o", tmp_path / "s", "--jobs", "1", *extra)
    assert_one_line_error(result, str(src), *fragments)
    assert not (tmp_path / "s").exists()


def test_preprocess_not_csv(tmp_path):
    src = tmp_path / "in.xlsx"
    src.write_bytes(b"PK\x03\x04")
    assert_one_line_error(run("preprocess", src, "-o", tmp_path / "s"), "not a CSV, SMILES, SDF")


def test_preprocess_unknown_dataset(tmp_path):
    result = run("preprocess", "qm7", "-o", tmp_path / "s")
    assert_one_line_error(result, "unknown data set 'qm7'", "did you mean qm9")


def test_preprocess_bad_rounds(tmp_path):
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n")
    result = run("preprocess", src, "-o", tmp_path / "s", "--min-rounds", "5", "--max-rounds", "2")
    assert_one_line_error(result, "min_rounds")


def test_bench_json_runs_every_schedule_on_the_same_molecules():
    import json

    result = run("bench", "esol", "--molecules", 64, "--epochs", 1, "--hidden", 16,
                 "--molecules-per-instance", 8, "--max-active-keys", 4, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["settings"]["max_active_keys"] == 4
    for name in ("reference", "sync", "sync-each", "async"):
        assert out[name]["molecules"] == 64 and out[name]["molecules_per_second"] > 0
    assert out["reference-x2"]["molecules"] == 128          # two trainers, the same 64 each
    assert out["sync"]["instances_per_update"] == 4
    assert out["sync-each"]["instances_per_update"] == 1
    ratio = out["async"]["molecules_per_second"] / out["sync-each"]["molecules_per_second"]
    assert out["async"]["speedup_vs_sync-each"] == pytest.approx(ratio)
    assert set(out["async-stages"]["utilization"]) >= {"message", "update", "readout"}
    assert set(out["async"]["utilization"]) == {"all", "all#1"}      # two fused replicas
    assert all(0 <= f <= 1 for f in out["async"]["utilization"].values())
    assert set(out["async"]["cpu"]) == set(out["async"]["utilization"])
    assert all(f >= 0 for f in out["async"]["cpu"].values()) and "cpu" not in out["reference"]


def test_bench_unknown_schedule_is_one_line():
    assert_one_line_error(run("bench", "esol", "--schedule", "fast"), "unknown schedule 'fast'")
    assert_one_line_error(run("bench", "esol", "--schedule", "async-mak0"), "unknown schedule")
    assert_one_line_error(run("bench", "esol", "--schedule", "async", "--schedule", "async"),
                          "named twice")


def test_bench_compares_async_variants_in_one_run():
    import json

    result = run("bench", "esol", "--molecules", 32, "--epochs", 1, "--hidden", 16,
                 "--molecules-per-instance", 8, "--schedule", "async", "--schedule", "async-mak1",
                 "--schedule", "async-mak2-nostash", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert {"async", "async-mak1", "async-mak2-nostash"} <= set(out)
    assert out["async-mak1"]["in_flight_max"] == 1 and out["async-mak1"]["weight_stashing"]
    assert out["async-mak2-nostash"]["in_flight_max"] == 2
    assert not out["async-mak2-nostash"]["weight_stashing"]
    assert out["async"]["max_active_keys"] == 4 and out["async"]["in_flight_max"] == 4
    for name in ("async-mak1", "async-mak2-nostash"):
        assert out[name]["molecules"] == 32
        ratio = out["async"]["molecules_per_second"] / out[name]["molecules_per_second"]
        assert out["async"][f"speedup_vs_{name}"] == pytest.approx(ratio)


@pytest.mark.parametrize("name, settings", [
    ("async", ("async", {})), ("sync-each", ("sync", {})), ("reference-x2", ("reference", {})),
    ("async-mak8", ("async", {"max_active_keys": 8})),
    ("async-nostash", ("async", {"weight_stashing": False})),
    ("async-mak16-nostash", ("async", {"max_active_keys": 16, "weight_stashing": False})),
    ("async[max_active_keys=8,weight_stashing=false]",
     ("async", {"max_active_keys": 8, "weight_stashing": False})),
    ("sync-each[min_update_frequency=2]", ("sync", {"min_update_frequency": 2})),
    ("async-nostash[ max_active_keys = 2 ]",
     ("async", {"max_active_keys": 2, "weight_stashing": False})),
])
def test_bench_schedule_names(name, settings):
    from molpipe.measure.bench import schedule_settings

    got = schedule_settings(name)
    assert (got["kind"], got["engine"]) == settings


@pytest.mark.parametrize("name, fragments", [
    ("async-nostash-mak8", ["unknown schedule", "reference, sync, sync-each, async"]),
    ("async-mak", ["unknown schedule"]), ("sync-mak8", ["unknown schedule"]),
    ("fast[max_active_keys=2]", ["unknown schedule 'fast[max_active_keys=2]'"]),
    ("async[speed=2]", ["unknown engine field 'speed'",
                        "max_active_keys, min_update_frequency, weight_stashing"]),
    ("async[max_active_keys=0]", ["at least 1"]), ("async[weight_stashing=maybe]", ["true or false"]),
    ("async[max_active_keys]", ["no value"]),
])
def test_bench_bad_schedule_names_list_the_choices(name, fragments):
    from molpipe.measure.bench import schedule_settings

    with pytest.raises(ValueError) as err:
        schedule_settings(name)
    for frag in fragments:
        assert frag in str(err.value)


@pytest.mark.parametrize("text, fragment", [
    ("embed,message/upd", "unknown stage 'upd'"),
    ("embed,message/message", "'message' is placed twice"),
])
def test_train_bad_placement_is_one_line(tmp_path, text, fragment):
    assert_one_line_error(run("train", "esol", "--placement", text, "--out", tmp_path / "r"),
                          "--placement", fragment)


@pytest.mark.slow
def test_train_with_two_workers(tmp_path):
    import json

    out = tmp_path / "run"
    result = run("train", "freesolv", "--epochs", 1, "--hidden", 16, "--quiet", "--out", out,
                 "--placement", "embed,message,readout/update,rings,loss")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["placement"] == "embed,message,readout/update,rings,loss"
    assert set(report["utilization"]) == {"embed+message+readout", "update+rings+loss"}
    assert set(report["worker_cpu"]) == set(report["utilization"])
    missing = run("train", "freesolv", "--epochs", 1, "--hidden", 16, "--quiet",
                  "--out", tmp_path / "other", "--placement", "embed,message/update,readout,loss")
    assert_one_line_error(missing, "'rings' has no worker")


@pytest.mark.parametrize("args, fragments", [
    (("--aggregation", "max"), ("--aggregation", "mean, sum, norm, attention, mean+norm", "'max'")),
    (("--dropout", "1.5"), ("--dropout", "[0, 1)")),
    (("--weight-decay", "-1"), ("--weight-decay",)),
    (("--loss", "gauss"), ("--loss must be one of mse, mve", "'gauss'")),
    (("--loss", "mve", "--task", "classification"), ("--loss mve", "regression")),
])
def test_train_bad_readout_options_are_one_line(tmp_path, args, fragments):
    assert_one_line_error(run("train", "esol", *args, "--out", tmp_path / "r"), *fragments)


def test_train_aggregation_reaches_model_and_report(tmp_path):
    import json

    out = tmp_path / "run"
    result = run("train", "freesolv", "--epochs", 1, "--hidden", 16, "--quiet", "--out", out,
                 "--aggregation", "attention", "--dropout", "0.1")
    assert result.exit_code == 0, result.output
    report = json.loads((out / "report.json").read_text())
    assert report["network"]["aggregation"] == "attention" and report["network"]["dropout"] == 0.1
    model = json.loads((out / "model" / "config.json").read_text())
    assert model["network"]["aggregation"] == "attention"


def test_version_names_molpipe_and_its_chemistry_stack():
    result = run("--version")
    assert result.exit_code == 0
    import molpipe
    assert result.output.startswith(f"molpipe {molpipe.__version__} (Python ")
    assert "RDKit" in result.output and "numba" in result.output


def test_train_val_max_reaches_settings_report_and_display(tmp_path):
    import json

    out = tmp_path / "run"
    result = run("train", "freesolv", "--epochs", 1, "--hidden", 8, "--schedule", "reference",
                 "--val-max", 25, "--out", out)
    assert result.exit_code == 0, result.output
    assert "val 64 (selecting on 25)" in result.output
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["val_max"] == 25 and report["validation"]["rows_used"] == 25
    assert "val_max = 25" in (out / "config.toml").read_text()
    assert json.loads((out / "settings.json").read_text())["val_max"] == 25
    assert_one_line_error(run("train", "esol", "--val-max", 0, "--out", tmp_path / "r"),
                          "--val-max")


def test_train_help_fits_80_columns_without_cutting_an_option(monkeypatch):
    monkeypatch.setenv("COLUMNS", "80")
    monkeypatch.setenv("TERMINAL_WIDTH", "80")
    result = run("train", "--help")
    assert result.exit_code == 0
    assert "…" not in result.output
    assert all(len(line) <= 80 for line in result.output.splitlines())
    for panel in ("Data", "Model", "Training", "Pipeline", "Run directory"):
        assert f"─ {panel} ─" in result.output
    for option in ("--molecules-per-instance", "--min-update-frequency", "--no-readout-features",
                   "--checkpoint-minutes"):
        assert option in result.output


def test_option_values_complete_in_the_shell():
    from molpipe.cli.train import _choices

    assert _choices("async", "sync", "reference")("s") == ["sync"]
    import click
    import typer.main

    command = typer.main.get_command(app).commands["train"]
    by_name = {p.name: p for p in command.params}
    ctx = click.Context(command)
    assert [c.value for c in by_name["aggregation"].shell_complete(ctx, "mean")] == \
        ["mean+norm", "mean"]
    assert [c.value for c in by_name["split"].shell_complete(ctx, "sc")] == \
        ["scaffold", "scaffold-balanced"]


@pytest.mark.slow
def test_an_existing_run_directory_is_kept_and_the_run_goes_next_to_it(tmp_path):
    out = tmp_path / "runs" / "fs"
    args = ("train", "freesolv", "--epochs", "1", "--hidden", "8", "--quiet", "--out", out)
    assert run(*args).exit_code == 0
    first = (out / "report.json").read_bytes()
    again = run(*args)
    assert again.exit_code == 0, again.output
    assert f"{out} holds a run: writing {out}-2 (--overwrite replaces {out})" in again.stderr
    assert (out / "report.json").read_bytes() == first and (tmp_path / "runs" / "fs-2" / "report.json").exists()
    assert run(*args, "--overwrite").exit_code == 0 and not (tmp_path / "runs" / "fs-3").exists()


def test_train_test_every_epoch_writes_the_test_error_per_epoch(tmp_path):
    import csv
    import json

    out = tmp_path / "run"
    result = run("train", "freesolv", "--epochs", 2, "--hidden", 16, "--quiet", "--out", out,
                 "--molecules-per-instance", 32, "--test-every-epoch")
    assert result.exit_code == 0, result.output
    rows = list(csv.DictReader(open(out / "metrics.csv")))
    assert len(rows) == 2 and {"test_freesolv_rmse", "test_seconds", "train_seconds"} <= set(rows[0])
    spent = [float(r["test_seconds"]) for r in rows]
    assert 0 < spent[0] < spent[1] < float(rows[1]["wall_seconds"])
    trained = [float(r["train_seconds"]) for r in rows]
    assert trained[1] == pytest.approx(trained[0] + float(rows[1]["epoch_seconds"]))
    report = json.loads((out / "report.json").read_text())
    assert report["config"]["track_test"] is True
    import time
    assert 0 < time.time() - report["started_unix"] - report["wall_seconds"] < 60   # unix s
    last_best = rows[report["best_epoch"] - 1]       # the best epoch's test pass is the model's
    assert float(last_best["test_freesolv_rmse"]) == pytest.approx(
        report["test"]["freesolv"]["rmse"], rel=1e-5)
    assert "--test-every-epoch" not in run("train", "--help").stdout     # for benchmarks only
