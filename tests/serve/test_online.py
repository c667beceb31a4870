"""The online model without HTTP: journal before receipt, prediction before training,
every journal row folded exactly once across restarts, snapshots a model can be read from."""

import csv
import json
import time
from pathlib import Path

import numpy as np
import pytest

from molpipe.inference.predict import Predictor
from molpipe.io.checkpoint import load_checkpoint
from molpipe.serve import build
from molpipe.serve.journal import Journal, JournalError

ESOL = Path(__file__).resolve().parents[2] / "datasets" / "esol.csv"


def esol_rows(n: int, start: int = 0) -> list[tuple[str, list]]:
    with open(ESOL, newline="") as f:
        rows = list(csv.DictReader(f))[start:start + n]
    return [(r["smiles"], [float(r["measured_log_solubility"])]) for r in rows]


def wait_for(cond, seconds: float = 30.0) -> bool:
    deadline = time.monotonic() + seconds
    while time.monotonic() < deadline:
        if cond():
            return True
        time.sleep(0.02)
    return False


def new_model(out, **kw):
    return build.untrained(["logS"], "regression", out, snapshot_every=3600, **kw).start()


def test_journal_numbers_rows_and_cuts_a_torn_last_line(tmp_path):
    j = Journal(tmp_path, ["a", "b"])
    assert j.append([("CCO", [1.0, float("nan")]), ("CC", [None, 2.0])]) == [1, 2]
    j.close()
    with open(tmp_path / "journal.jsonl", "ab") as f:
        f.write(b'{"seq": 3, "smi')                     # a kill in the middle of a write
    j = Journal(tmp_path, ["a", "b"])
    assert j.repaired > 0 and j.last_seq == 2
    assert j.append([("N", [3.0, 4.0])]) == [3]
    rows = list(j.rows())
    assert [r[0] for r in rows] == [1, 2, 3]
    assert rows[0][1] == "CCO" and np.isnan(rows[0][2][1]) and rows[1][2][1] == 2.0
    j.close()


def test_journal_with_a_gap_is_refused_naming_the_file(tmp_path):
    (tmp_path / "journal.jsonl").write_text(
        '{"seq": 1, "smiles": "C", "y": [1]}\n{"seq": 3, "smiles": "CC", "y": [2]}\n')
    with pytest.raises(JournalError, match="journal.jsonl: row 3 follows row 1"):
        Journal(tmp_path, ["a"])


def test_each_row_is_predicted_before_it_is_trained_on(tmp_path):
    model = new_model(tmp_path)
    try:
        model.set_training(False)
        smiles = "CCCCCCO"
        g, _, _ = model.featurize([smiles])
        version, before = model.predict_graphs(g)
        receipt = model.observe([(smiles, [-1.0])])
        assert receipt["seqs"] == [1, 1] and receipt["rejected"] == []
        assert wait_for(lambda: len(model.prequential) == 1)
        assert model.prequential.p[0][0] == pytest.approx(before[0, 0], abs=1e-6)
        assert model.folded == []                        # paused: predicted, not trained
        model.set_training(True)
        assert wait_for(lambda: model.folded == [1])
        assert wait_for(lambda: model.live.version > version)
        _, after = model.predict_graphs(g)
        assert after[0, 0] != before[0, 0]
    finally:
        model.stop()
    lines = (tmp_path / "prequential.csv").read_text().splitlines()
    assert lines[0].split(",") == ["seq", "time", "version", "logS", "logS_pred"]
    assert lines[1].split(",")[0] == "1"


def test_rows_are_folded_once_across_a_crash_and_a_restart(tmp_path):
    rows = esol_rows(120)
    model = new_model(tmp_path)
    for i in range(0, 60, 10):
        model.observe(rows[i:i + 10])
    assert wait_for(lambda: len(model.folded) == 60)
    first = model.snapshot()
    assert first["rows_folded"] == 60
    for i in range(60, 120, 10):                         # journaled after the snapshot
        model.observe(rows[i:i + 10])
    model.stop(snapshot=False)                           # as if killed: no last snapshot
    state, arrays, _ = load_checkpoint(tmp_path)
    assert sorted(arrays["serve/folded"].tolist()) == list(range(1, 61))

    again = new_model(tmp_path)                          # resumes, replays rows 61..120
    try:
        assert again.live.version > first["version"]     # versions go on counting
        assert wait_for(lambda: len(again.folded) == 120)
        assert sorted(again.folded) == list(range(1, 121))
        assert wait_for(lambda: len(again.pool_graphs) == 120)
        again.snapshot()
    finally:
        again.stop(snapshot=False)
    _, arrays, _ = load_checkpoint(tmp_path)
    folded = arrays["serve/folded"].tolist()
    assert sorted(folded) == list(range(1, 121)) and len(set(folded)) == len(folded)


def test_a_snapshot_is_a_model_directory_predicting_as_the_service_did(tmp_path):
    model = new_model(tmp_path)
    try:
        model.observe(esol_rows(64))
        assert wait_for(lambda: len(model.folded) == 64)
        model.set_training(False)
        snap = model.snapshot()
        graphs, _, _ = model.featurize(["c1ccccc1O", "CCN(CC)CC"])
        version, served = model.predict_graphs(graphs)
        assert version == snap["version"]
    finally:
        model.stop(snapshot=False)
    P, errors = Predictor.load(tmp_path / "model").predict(["c1ccccc1O", "CCN(CC)CC"])
    assert errors == ["", ""]
    np.testing.assert_allclose(P, served, rtol=1e-5, atol=1e-5)
    config = json.loads((tmp_path / "model" / "config.json").read_text())
    assert config["targets"] == ["logS"]


def test_unreadable_rows_go_to_rejects_and_the_rest_are_kept(tmp_path):
    model = new_model(tmp_path)
    try:
        receipt = model.observe([("CCO", [1.0]), ("C1CC", [2.0]), ("c1ccccc1", [3.0])])
    finally:
        model.stop(snapshot=False)
    assert receipt["accepted"] == 2 and receipt["seqs"] == [1, 2]
    assert [r["row"] for r in receipt["rejected"]] == [1]
    rejects = (tmp_path / "rejects.csv").read_text().splitlines()
    assert rejects[0] == "time,smiles,reason" and "C1CC" in rejects[1]


def test_serve_from_a_data_set_validates_after_each_epoch(tmp_path):
    from molpipe.training.settings import TrainConfig

    config = TrainConfig(data="esol", epochs=3, limit=200)
    model = build.from_data(config, tmp_path, snapshot_every=3600).start()
    try:
        assert wait_for(lambda: len(model.history) == 3, 120)   # the last epoch's too
        assert [h["epoch"] for h in model.history] == [1, 2, 3]
        row = model.history[-1]
        assert {"epoch", "version", "rmse", "molecules_trained"} <= set(row)
        assert wait_for(lambda: model.live.in_flight["train"] == 0)
        n = model.live.n_trained
        time.sleep(0.5)
        assert model.live.n_trained == n                 # its epochs are done: it idles
    finally:
        model.stop(snapshot=False)


def test_a_kill_inside_the_first_snapshot_leaves_a_service_that_starts_again(tmp_path):
    model = new_model(tmp_path)
    model.observe(esol_rows(5))
    model.stop(snapshot=False)
    (tmp_path / "checkpoints" / "epoch-0001.tmp").mkdir(parents=True)   # the cut-short write
    again = new_model(tmp_path)
    try:
        assert wait_for(lambda: sorted(again.folded) == [1, 2, 3, 4, 5])
    finally:
        again.stop(snapshot=False)


def test_new_rows_are_folded_in_instances_of_one_plan_and_back_pressure_keeps_nothing(tmp_path):
    from molpipe.serve.online import FOLD_SIZE, Busy

    model = new_model(tmp_path)
    try:
        model.set_training(False)
        for smiles, y in esol_rows(40):                      # one row a request
            model.observe([(smiles, y)])
        assert wait_for(lambda: len(model.prequential) == 40)
        sizes = []
        real = model._next_train

        def spy():
            item = real()
            if item is not None and item[0] in model._folding:
                sizes.append((item[1].n_mols, item[1].n_rounds))
            return item

        model._next_train = spy
        model.live.next_train = spy
        model.set_training(True)
        assert wait_for(lambda: len(model.folded) == 40)
        assert sum(n for n, _ in sizes) == 40 and max(n for n, _ in sizes) <= FOLD_SIZE
        assert len(sizes) < 40                               # rows of a plan share instances
        model.max_pending = 5
        model.set_training(False)
        model.observe(esol_rows(5, 40))
        with pytest.raises(Busy, match="5 observed rows wait"):
            model.observe(esol_rows(1, 45))
        assert model.journal.last_seq == 45                  # the refused row was not kept
    finally:
        model.set_training(True)
        model.stop(snapshot=False)


def test_large_requests_are_featurized_on_worker_processes_as_in_process():
    from molpipe.serve.featurizer import INLINE, Featurizer

    smiles = [s for s, _ in esol_rows(INLINE + 10)]
    smiles[3], smiles[-1] = "C1CC", "not a smiles"
    pooled, inline = Featurizer(2, 6, jobs=1), Featurizer(2, 6, jobs=0)
    try:
        g1, k1, e1 = pooled(smiles)
        g0, k0, e0 = inline(smiles)
    finally:
        pooled.close()
    assert k1 == k0 and e1 == e0 and e1[3] and e1[-1] and not e1[0]
    assert all(np.array_equal(a.V, b.V) and np.array_equal(a.edge_index, b.edge_index)
               and a.n_rounds == b.n_rounds for a, b in zip(g1, g0))


def test_serving_a_run_answers_as_its_model_then_learns_into_its_own_directory(tmp_path):
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    run = tmp_path / "run"
    train(TrainConfig(data="esol", epochs=1, limit=120, hidden=32), run)
    before = (run / "model" / "params.npz").read_bytes()
    smiles = ["c1ccccc1O", "CCN(CC)CC"]
    want, _ = Predictor.load(run).predict(smiles)
    model = build.from_run(run, snapshot_every=3600).start()
    try:
        assert model.out == run / "serve" and model.targets == ["measured_log_solubility"]
        version, got = model.predict_graphs(model.featurize(smiles)[0])
        assert version == 0
        np.testing.assert_allclose(got, want, rtol=1e-5, atol=1e-5)
        model.observe(esol_rows(20, 500))
        assert wait_for(lambda: len(model.folded) == 20)
        assert wait_for(lambda: model.live.version > 0)
        model.snapshot()
    finally:
        model.stop(snapshot=False)
    assert (run / "model" / "params.npz").read_bytes() == before     # the run's own model stays
    assert Predictor.load(run / "serve" / "model").targets == ["measured_log_solubility"]
