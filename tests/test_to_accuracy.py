"""molpipe bench --to-accuracy: seconds to a validation error per schedule, from one seed."""

import json

import numpy as np
import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.measure.to_accuracy import Goal, first_reached, metric_name, val_error

runner = CliRunner()
SMALL = ("esol", "--to-accuracy", "--hidden", 16, "--molecules", 32,
         "--molecules-per-instance", 8, "--max-active-keys", 4)


def run(*args):
    return runner.invoke(app, [str(a) for a in args])


def test_json_holds_the_target_and_every_schedule():
    result = run("bench", *SMALL, "--epochs", 2, "--max-epochs", 3, "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert "reference" in out["to_accuracy"]["schedules"] and "async" not in out   # no throughput
    acc = out["to_accuracy"]
    assert acc["metric"] == "rmse" and acc["target_source"] == "reference best"
    assert set(acc["schedules"]) == {"reference", "sync", "sync-each", "async-stages", "async"}
    ref = acc["schedules"]["reference"]
    assert acc["target"] == ref["best"] == min(e for _, _, e in ref["curve"])
    assert ref["epochs"] == 2 and ref["epochs_to_target"] is not None       # its own best
    assert ref["seconds_to_target"] == pytest.approx(ref["curve"][ref["epochs_to_target"] - 1][1])
    for r in acc["schedules"].values():
        assert {"seconds_to_target", "epochs_to_target", "molecules_per_second", "best",
                "curve"} <= set(r)
        assert r["molecules_per_second"] > 0 and 1 <= r["epochs"] <= 3
        assert [e for e, _, _ in r["curve"]] == list(range(1, r["epochs"] + 1))
        seconds = [s for _, s, _ in r["curve"]]
        assert seconds == sorted(seconds) and seconds[-1] == pytest.approx(r["train_seconds"])
        if r["seconds_to_target"] is not None:
            assert r["curve"][r["epochs_to_target"] - 1][2] <= acc["target"]
    assert acc["schedules"]["sync-each"]["instances_per_update"] == 1


def test_the_same_seed_starts_every_schedule_from_the_same_network():
    # async with one instance in flight reproduces the reference trainer's parameters
    result = run("bench", *SMALL, "--epochs", 2, "--schedule", "reference",
                 "--schedule", "async[max_active_keys=1]", "--json")
    assert result.exit_code == 0, result.output
    s = json.loads(result.stdout)["to_accuracy"]["schedules"]
    ref, one = s["reference"]["curve"], s["async[max_active_keys=1]"]["curve"]
    assert np.allclose([e for *_, e in ref], [e for *_, e in one[: len(ref)]], rtol=1e-5)


def test_an_unreachable_target_ends_with_a_table_that_says_so(monkeypatch):
    monkeypatch.setenv("COLUMNS", "200")         # one line per schedule
    result = run("bench", *SMALL, "--epochs", 2, "--target", 0, "--schedule", "reference",
                 "--schedule", "async-nostash", "--schedule", "sync[min_update_frequency=2]")
    assert result.exit_code == 0, result.output
    assert result.stdout.count("not reached in 4 epochs") == 3, result.stdout
    assert "sync[min_update_frequency=2]" in result.stdout          # not taken for markup
    result = run("bench", *SMALL, "--epochs", 2, "--target", 0, "--schedule", "async", "--json")
    acc = json.loads(result.stdout)["to_accuracy"]
    assert acc["target"] == 0 and acc["target_source"] == "given"
    assert set(acc["schedules"]) == {"async"}            # a given target needs no reference
    r = acc["schedules"]["async"]
    assert r["seconds_to_target"] is None and r["epochs_to_target"] is None
    assert r["epochs"] == 4 and r["stopped_by"] == "max_epochs (4)"


def test_max_seconds_caps_a_schedule():
    result = run("bench", *SMALL, "--epochs", 20, "--target", 0, "--max-seconds", 1e-6,
                 "--schedule", "async", "--json")
    r = json.loads(result.stdout)["to_accuracy"]["schedules"]["async"]
    assert r["epochs"] == 1 and r["stopped_by"].startswith("max_seconds")


def test_a_huge_target_is_reached_in_the_first_epoch():
    result = run("bench", *SMALL, "--epochs", 3, "--target", 1e9, "--json")
    assert result.exit_code == 0, result.output
    for r in json.loads(result.stdout)["to_accuracy"]["schedules"].values():
        assert r["epochs_to_target"] == 1 and r["seconds_to_target"] == r["curve"][0][1] > 0
        assert r["stopped_by"] == "target"


def test_to_accuracy_with_throughput_keeps_the_throughput_blocks():
    result = run("bench", *SMALL, "--epochs", 1, "--target", 1e9, "--throughput",
                 "--schedule", "reference", "--schedule", "async", "--json")
    assert result.exit_code == 0, result.output
    out = json.loads(result.stdout)
    assert out["async"]["molecules"] == 32 * 4 and "speedup_vs_reference" in out["async"]
    assert set(out["to_accuracy"]["schedules"]) == {"reference", "async"}


@pytest.mark.parametrize("args, fragments", [
    (("--schedule", "fast"), ["unknown schedule 'fast'", "reference, sync, sync-each, async"]),
    (("--schedule", "async[speed=2]"), ["unknown engine field 'speed'", "max_active_keys"]),
    (("--schedule", "reference-x2"), ["two networks", "reference, sync, sync-each, async"]),
    (("--max-epochs", 0), ["--max-epochs must be at least 1"]),
])
def test_bad_settings_are_one_line(args, fragments):
    result = run("bench", *SMALL, *args)
    assert result.exit_code == 2, result.output
    assert "Traceback" not in result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:"), result.stderr
    for frag in fragments:
        assert frag in lines[0]


def test_target_options_need_to_accuracy():
    result = run("bench", "esol", "--target", 1)
    assert result.exit_code == 2 and "--to-accuracy" in result.stderr


def test_val_error_is_train_s_selection_in_data_units():
    m = {"y": {"rmse": 0.5, "auc": float("nan")}}
    assert val_error(m, "regression", np.array([2.0])) == pytest.approx(0.5)
    two = {"a": {"rmse": 1.0}, "b": {"rmse": 4.0}}
    assert val_error(two, "regression", np.array([1.0, 2.0])) == pytest.approx(1.5)
    auc = {"a": {"auc": 0.8}, "b": {"auc": 0.6}}
    assert val_error(auc, "classification", np.ones(2)) == pytest.approx(0.3)
    assert metric_name("classification", 2) == "1 - auc" and metric_name("regression", 1) == "rmse"
    assert first_reached([[1, 0.5, 3.0], [2, 1.0, None], [3, 1.5, 1.0]], 2.0) == (3, 1.5)
    assert first_reached([[1, 0.5, 3.0]], 2.0) is None
    assert Goal(epochs=5).cap == 10 and Goal(epochs=5, max_epochs=7).cap == 7
