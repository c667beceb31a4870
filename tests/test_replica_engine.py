"""``molpipe train --backend mpi --layout replicas`` (training/replica_engine.py) end to end:
``mpiexec -n 1`` (FreeSolv) predicts exactly what the fused thread layout predicts; ``-n 2`` trains every
training row once an epoch from shares of store rows; a wrong ``--replicas`` is one line."""

from __future__ import annotations

import json
import os
import subprocess
import sys

import pytest

from molpipe.training.settings import SettingsError, TrainConfig

from .runtime.test_mpi import ROOT, _mpiexec, needs_mpi

ARGS = ["train", "freesolv", "--epochs", "2", "--seed", "3", "--overwrite"]


def _train(tmp_path, name: str, extra, ranks: int | None = None, check: bool = True):
    cmd = [sys.executable, "-m", "cli", *ARGS, "--out", str(tmp_path / name), *extra]
    if ranks is not None:
        cmd = [_mpiexec(), "-n", str(ranks), *cmd]
    env = {**os.environ, "OMP_NUM_THREADS": "1", "COLUMNS": "200"}
    proc = subprocess.run(cmd, cwd=ROOT, env=env, capture_output=True, text=True, timeout=300)
    if check:
        assert proc.returncode == 0, f"{proc.stdout[-3000:]}\n{proc.stderr[-3000:]}"
    return proc


@needs_mpi
def test_one_rank_predicts_what_the_fused_thread_layout_predicts(tmp_path):
    _train(tmp_path, "mpi1", ["--backend", "mpi", "--layout", "replicas"], ranks=1)
    _train(tmp_path, "fused", ["--layout", "fused"])
    a = (tmp_path / "mpi1" / "test_predictions.csv").read_text()
    b = (tmp_path / "fused" / "test_predictions.csv").read_text()
    assert a == b
    assert json.loads((tmp_path / "mpi1" / "report.json").read_text())["config"]["backend"] == "mpi"


@needs_mpi
def test_two_ranks_train_every_row_once_an_epoch(tmp_path):
    _train(tmp_path, "mpi2", ["--backend", "mpi", "--layout", "replicas", "--exchange-every", "3"],
           ranks=2)
    report = json.loads((tmp_path / "mpi2" / "report.json").read_text())
    lines = (tmp_path / "mpi2" / "metrics.csv").read_text().splitlines()
    head = lines[0].split(",")
    for line in lines[1:]:
        row = dict(zip(head, line.split(",")))
        assert int(row["rows_seen"]) == report["split_sizes"]["train"]
    assert report["config"]["exchange_every"] == 3


@needs_mpi
def test_replicas_other_than_the_ranks_is_one_line(tmp_path):
    proc = _train(tmp_path, "bad", ["--backend", "mpi", "--layout", "replicas", "--replicas", "3"],
                  ranks=2, check=False)
    text = proc.stdout + proc.stderr
    assert proc.returncode != 0
    assert "launch with mpiexec -n 3" in text and "Traceback" not in text, text[-2000:]


def test_replicas_layout_is_allowed_on_mpi_but_not_with_sync():
    assert TrainConfig(backend="mpi", layout="replicas").layout == "replicas"
    with pytest.raises(SettingsError, match="async"):
        TrainConfig(backend="mpi", layout="replicas", schedule="sync")
    with pytest.raises(SettingsError, match="--exchange-every"):
        TrainConfig(exchange_every=0)
