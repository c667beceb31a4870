"""molpipe train --follow: rows appended to a CSV are observed once each, across restarts;
a line still being written waits for its newline."""

import csv
from pathlib import Path

import pytest
from typer.testing import CliRunner

from cli import app
from molpipe.serve import build
from molpipe.serve.follow import FollowError, follow

ESOL = Path(__file__).resolve().parents[2] / "datasets" / "esol.csv"


def rows(n, start=0):
    with open(ESOL, newline="") as f:
        got = list(csv.DictReader(f))[start:start + n]
    return [f"{r['smiles']},{r['measured_log_solubility']}\n" for r in got]


def test_follow_observes_appended_rows_once_across_restarts(tmp_path):
    feed, out = tmp_path / "feed.csv", tmp_path / "srv"
    feed.write_text("smiles,logS\n" + "".join(rows(30)) + "CCO,not-a-number\n")
    model = build.untrained(["logS"], "regression", out, snapshot_every=3600).start()
    try:
        totals = follow(model, feed, idle=0.5, poll=0.05)
    finally:
        model.stop()
    assert totals == {"accepted": 30, "rejected": 1}
    rejects = (out / "rejects.csv").read_text()
    assert "feed.csv line 32: not a row of SMILES and numbers" in rejects   # header is line 1
    with open(feed, "a") as f:                     # more rows, the last one half written
        f.write("".join(rows(5, 30)) + "CC,1e999\n" + "CCCC")
    model = build.untrained(["logS"], "regression", out, snapshot_every=3600).start()
    try:
        totals = follow(model, feed, idle=0.5, poll=0.05)
        assert totals == {"accepted": 5, "rejected": 1}
        assert "feed.csv line 38: not a row of SMILES and numbers" in \
            (out / "rejects.csv").read_text()                # counted across the restart
        assert model.journal.last_seq == 35 and sorted(model.folded) == list(range(1, 36))
    finally:
        model.stop()
    journal = [line for line in (out / "journal.jsonl").read_text().splitlines()]
    assert len(journal) == 35 and '"CCCC"' not in "".join(journal)


def test_follow_names_a_missing_target_column(tmp_path):
    feed = tmp_path / "feed.csv"
    feed.write_text("smiles,other\nCCO,1\n")
    model = build.untrained(["logS"], "regression", tmp_path / "srv").start()
    try:
        with pytest.raises(FollowError, match="feed.csv: no column 'logS'"):
            follow(model, feed, idle=0.2, poll=0.05)
    finally:
        model.stop(snapshot=False)


def test_train_follow_command_trains_and_writes_a_model(tmp_path):
    feed, out = tmp_path / "feed.csv", tmp_path / "run"
    feed.write_text("smiles,logS\n" + "".join(rows(40)))
    result = CliRunner().invoke(app, ["train", "--follow", str(feed), "--follow-idle", "0.5",
                                      "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert "40 rows folded" in result.output
    assert (out / "model" / "config.json").is_file() and (out / "prequential.csv").is_file()
    plotted = CliRunner().invoke(app, ["plot", str(out)])
    assert plotted.exit_code == 0 and (out / "plots" / "prequential.png").is_file()
