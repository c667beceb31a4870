"""predict / evaluate library: per-row errors, streamed files (CSV, SDF), metrics equal the report's."""

import csv
import json

import numpy as np
import pytest
from rdkit import Chem

from molpipe.data.errors import DataError
from molpipe.data.instance import pack
from molpipe.inference.evaluate import evaluate
from molpipe.training.metrics import regression_metrics
from molpipe.io.model import ModelError, load_model
from molpipe.inference.predict import Predictor, predict_smiles
from molpipe.inference.files import DOMAIN_COLUMNS, predict_file

GOOD = ["CCO", "c1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "ClC(Cl)Cl", "CCN(CC)CC"]
#: (SMILES, the start of the reason it fails)
BAD = [("C1CC", "unparsable"), ("C(C)(C)(C)(C)C", "bad valence"), ("", "empty")]

_RUN: dict = {}


def trained_run(tmp_path_factory):
    """A tiny async training run on freesolv (2 epochs, d_h 16), built once per session."""
    if "dir" not in _RUN:
        from molpipe.training.settings import TrainConfig
        from molpipe.training.train import train

        root = tmp_path_factory.mktemp("h4run")
        train(TrainConfig(data="freesolv", epochs=2, hidden=16, seed=3,
                          cache_root=str(root / "cache")), root / "run")
        _RUN["dir"] = root / "run"
    return _RUN["dir"]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


@pytest.fixture(scope="module")
def predictor(run_dir):
    return Predictor.load(run_dir)


def reference(run_dir, smiles):
    """network.predict of the molecules, each packed alone (no batching involved)."""
    from molpipe.chem.featurize import featurize

    network, config = load_model(run_dir)
    out = []
    for s in smiles:
        g = featurize(s, min_rounds=config["min_rounds"], max_rounds=config["max_rounds"])
        out.append(network.predict(pack([g], np.full((1, 1), np.nan)))[0])
    return np.array(out, dtype=np.float64)


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def write_seeded_csv(path):
    """name, SMILES (good and bad rows interleaved), a note with a comma; returns the rows."""
    rows = [(f"m{i}", s, f"note, {i}") for i, s in enumerate(GOOD[:3] + [BAD[0][0]] + GOOD[3:]
                                                            + [b for b, _ in BAD[1:]])]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "SMILES", "note"])
        w.writerows(rows)
    return rows


def test_predict_smiles_matches_network_and_reports_failures(run_dir, predictor):
    P, errors = predict_smiles(predictor, GOOD + [b for b, _ in BAD])
    assert P.shape == (len(GOOD) + len(BAD), 1)
    np.testing.assert_allclose(P[:len(GOOD)], reference(run_dir, GOOD), rtol=1e-5, atol=1e-6)
    assert errors[:len(GOOD)] == [""] * len(GOOD)
    for e, (_, reason) in zip(errors[len(GOOD):], BAD):
        assert e.startswith(reason), e
    assert np.isnan(P[len(GOOD):]).all()


def test_predict_accepts_a_run_dir_path(run_dir):
    P, errors = predict_smiles(run_dir, ["CCO"])
    assert errors == [""] and np.isfinite(P).all()


@pytest.mark.parametrize("n_jobs, chunk_size", [(1, 1024), (2, 3)])
def test_predict_csv_with_bad_rows(run_dir, predictor, tmp_path, n_jobs, chunk_size):
    src = tmp_path / "in.csv"
    rows = write_seeded_csv(src)
    out = tmp_path / "out.csv"
    summary = predict_file(predictor, src, out, n_jobs=n_jobs, chunk_size=chunk_size)
    assert (summary["rows"], summary["predicted"], summary["failed"]) == (len(rows), len(GOOD), len(BAD))
    got = read_csv(out)
    assert list(got[0]) == ["name", "SMILES", "note", "pred_freesolv", "error", *DOMAIN_COLUMNS]
    assert [(r["name"], r["SMILES"], r["note"]) for r in got] == rows      # input kept, in order
    good = [r for r in got if not r["error"]]
    assert [r["SMILES"] for r in good] == GOOD
    np.testing.assert_allclose([float(r["pred_freesolv"]) for r in good],
                               reference(run_dir, GOOD)[:, 0], rtol=1e-5, atol=1e-6)
    bad = {r["SMILES"]: r for r in got if r["error"]}
    for smiles, reason in BAD:
        assert bad[smiles]["pred_freesolv"] == "" and bad[smiles]["error"].startswith(reason)


def test_pool_and_single_process_agree(predictor, tmp_path):
    src = tmp_path / "in.csv"
    with open(src, "w") as f:
        f.write("smiles\n" + "\n".join((GOOD * 8)[:37]) + "\n")
    predict_file(predictor, src, tmp_path / "a.csv", n_jobs=1)
    predict_file(predictor, src, tmp_path / "b.csv", n_jobs=2, chunk_size=5)
    a, b = read_csv(tmp_path / "a.csv"), read_csv(tmp_path / "b.csv")
    assert len(a) == 37
    np.testing.assert_allclose([float(r["pred_freesolv"]) for r in a],
                               [float(r["pred_freesolv"]) for r in b], rtol=1e-5)


def test_predict_sdf(run_dir, predictor, tmp_path):
    src = tmp_path / "mols.sdf"
    broken = "broken\n  junk\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nnot an atom line\nM  END\n$$$$\n"
    records = []
    for i, s in enumerate(GOOD[:2]):
        mol = Chem.MolFromSmiles(s)
        mol.SetProp("_Name", f"mol{i}")
        records.append(Chem.MolToMolBlock(mol) + f">  <dG>\n{i}.5\n\n$$$$\n")
    src.write_text(records[0] + broken + records[1])
    summary = predict_file(predictor, src, tmp_path / "out.csv")
    assert (summary["rows"], summary["failed"]) == (3, 1)
    got = read_csv(tmp_path / "out.csv")
    assert list(got[0]) == ["name", "smiles", "dG", "pred_freesolv", "error", *DOMAIN_COLUMNS]
    assert [r["name"] for r in got] == ["mol0", "broken", "mol1"]
    assert [r["dG"] for r in got] == ["0.5", "", "1.5"]
    assert got[1]["error"] == "unparsable SDF record" and got[1]["pred_freesolv"] == ""
    np.testing.assert_allclose([float(got[0]["pred_freesolv"]), float(got[2]["pred_freesolv"])],
                               reference(run_dir, GOOD[:2])[:, 0], rtol=1e-5, atol=1e-6)


def test_existing_output_is_refused_and_kept(predictor, tmp_path):
    src = tmp_path / "in.csv"
    write_seeded_csv(src)
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    with pytest.raises(DataError, match="--overwrite"):
        predict_file(predictor, src, out)
    assert out.read_text() == "precious\n"
    predict_file(predictor, src, out, overwrite=True)
    assert read_csv(out)[0]["name"] == "m0"


def test_failure_mid_file_leaves_output_untouched(predictor, tmp_path):
    src = tmp_path / "in.csv"
    src.write_bytes(b"smiles\n" + b"CCO\n" * 50 + b"C\xff\xfeC\n")       # not UTF-8 at the end
    out = tmp_path / "out.csv"
    out.write_text("precious\n")
    with pytest.raises(DataError, match="UTF-8"):
        predict_file(predictor, src, out, overwrite=True, chunk_size=8)
    assert out.read_text() == "precious\n"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["in.csv", "out.csv"]   # no temp left


def test_load_rejects_non_models(tmp_path, run_dir):
    with pytest.raises(ModelError, match="not a molpipe model"):
        Predictor.load(tmp_path)
    with pytest.raises(ModelError, match="no such directory"):
        Predictor.load(tmp_path / "nope")
    import shutil

    copy = tmp_path / "copy"
    shutil.copytree(run_dir / "model", copy / "model")
    params = copy / "model" / "params.npz"
    data = bytearray(params.read_bytes())
    data[-10] ^= 0xFF
    params.write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        Predictor.load(copy)


def test_evaluate_test_split_equals_report(run_dir):
    report = json.loads((run_dir / "report.json").read_text())
    result = evaluate(run_dir)
    assert result["split"] == "test" and result["rows"] == report["split_sizes"]["test"]
    for target, ms in report["test"].items():
        for m, v in ms.items():
            assert result["metrics"][target][m] == pytest.approx(v, abs=1e-6, rel=1e-6), (target, m)


def test_evaluate_on_a_file(run_dir, predictor, tmp_path):
    src = tmp_path / "labelled.csv"
    y = [1.0, -2.0, 0.5, -4.0, 3.0]
    src.write_text("smiles,freesolv\n" + "".join(f"{s},{v}\n" for s, v in zip(GOOD, y))
                   + "C1CC,1.0\n")
    result = evaluate(predictor, str(src))
    want = regression_metrics(np.array(y), reference(run_dir, GOOD)[:, 0])
    assert result["rows"] == 5 and result["rejected"] == 1 and result["split"] is None
    for m, v in want.items():
        assert result["metrics"]["freesolv"][m] == pytest.approx(v, rel=1e-5, abs=1e-6)


def test_evaluate_refuses_other_targets(predictor, tmp_path):
    src = tmp_path / "other.csv"
    src.write_text("smiles,logS\nCCO,1.0\n")
    with pytest.raises(DataError, match="no column for the model's target"):
        evaluate(predictor, str(src))
    with pytest.raises(DataError, match="unknown data set"):
        evaluate(predictor, "freesolvv")


def _rewrite(src, dst, edit_config, edit_state=lambda s: s):
    """A copy of model directory ``src`` with its config and parameters edited."""
    from molpipe.io.model import save_model
    from molpipe.nn.network import NetworkConfig

    network, config = load_model(src)
    meta = {k: v for k, v in config.items()
            if k not in ("format", "network", "params", "params_sha256", "_dir",
                         "domain", "domain_sha256")}      # the copy keeps no domain
    net_cfg, meta = edit_config(dict(network.config.to_dict()), meta)
    save_model(dst, _Raw(net_cfg), edit_state(network.state_dict()), meta)
    return dst


class _Raw:
    """A network config written as given (fields an old molpipe did not write left out)."""

    def __init__(self, d):
        self.d = d

    def to_dict(self):
        return self.d


def test_old_models_load_version_1_features_and_mean(tmp_path):
    """A model from before featurizer version 2 and before the aggregation field (a mean
    readout over 60 atom / 7 bond columns) loads and predicts as it did: the same numbers
    as today's network with zero weights on the columns version 2 appended."""
    from molpipe.chem.featurize import V1_DIMS
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train

    train(TrainConfig(data="freesolv", epochs=1, hidden=16, aggregation="mean",
                      readout_features=False, baseline="none",
                      cache_root=str(tmp_path / "cache")), tmp_path / "run")
    a, b = V1_DIMS

    def zero_new_columns(state):
        state["embed.W_v"][a:] = 0
        state["embed.W_e"][b:] = 0
        return state

    today = _rewrite(tmp_path / "run" / "model", tmp_path / "today", lambda c, m: (c, m),
                     zero_new_columns)

    def as_version_1(cfg, meta):
        cfg = {k: v for k, v in cfg.items()
               if k not in ("aggregation", "dropout", "readout_features")}
        return cfg, {**meta, "featurizer_version": "1", "atom_dim": a, "bond_dim": b}

    def sliced(state):
        state = zero_new_columns(state)
        state["embed.W_v"], state["embed.W_e"] = state["embed.W_v"][:a], state["embed.W_e"][:b]
        del state["loss.atom_ref"]                 # nor was there an additive baseline
        return state

    old = _rewrite(tmp_path / "run" / "model", tmp_path / "old", as_version_1, sliced)
    assert "aggregation" not in json.loads((old / "config.json").read_text())["network"]
    p_old, err = predict_smiles(old, GOOD)
    p_today, _ = predict_smiles(today, GOOD)
    assert err == [""] * len(GOOD)
    np.testing.assert_allclose(p_old, p_today, rtol=1e-5)
    assert Predictor.load(old).network.config.aggregation == "mean"


# -- streaming: chunks change nothing, memory holds a bounded number of rows ------------------

def write_many(path, n):
    """``n`` rows cycling through GOOD and BAD (bad rows in place), with a name column."""
    pool = GOOD + [b for b, _ in BAD]
    with open(path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["name", "smiles"])
        w.writerows([f"m{i}", pool[(7 * i) % len(pool)]] for i in range(n))
    return [pool[(7 * i) % len(pool)] for i in range(n)]


@pytest.mark.parametrize("n_jobs, chunk_size", [(1, 1), (1, 4), (2, 1), (2, 3)])
def test_chunked_output_identical_to_unchunked(predictor, tmp_path, n_jobs, chunk_size):
    src = tmp_path / "in.csv"
    smiles = write_many(src, 41)
    predict_file(predictor, src, tmp_path / "whole.csv", n_jobs=1, chunk_size=1024)
    summary = predict_file(predictor, src, tmp_path / "chunked.csv", n_jobs=n_jobs,
                           chunk_size=chunk_size)
    whole, chunked = read_csv(tmp_path / "whole.csv"), read_csv(tmp_path / "chunked.csv")
    assert [r["smiles"] for r in chunked] == smiles                    # input order kept
    assert [r["name"] for r in chunked] == [f"m{i}" for i in range(41)]
    for a, b in zip(whole, chunked):
        assert (a["error"], a["in_domain"], a["domain_note"]) == \
               (b["error"], b["in_domain"], b["domain_note"])
        assert (a["pred_freesolv"] == "") == (b["pred_freesolv"] == "") == bool(a["error"])
        if not a["error"]:                     # instances packed otherwise: float32 rounding
            assert float(b["pred_freesolv"]) == pytest.approx(float(a["pred_freesolv"]),
                                                              rel=1e-5, abs=1e-6)
            assert b["similarity"] == a["similarity"]
    failed = [i for i, s in enumerate(smiles) if s in {b for b, _ in BAD}]
    assert [i for i, r in enumerate(chunked) if r["error"]] == failed   # bad rows in place
    assert summary["failed"] == len(failed) and summary["rows"] == 41


@pytest.mark.parametrize("n_jobs, chunk_size", [(1, 5), (2, 4)])
def test_rows_in_flight_are_bounded(predictor, tmp_path, monkeypatch, n_jobs, chunk_size):
    """Rows read from the input and not yet written never exceed ``2 n_jobs + 1`` chunks,
    counted by a hook on the reader and the writer's progress, not by memory."""
    import molpipe.inference.files as files

    src = tmp_path / "in.csv"
    write_many(src, 120)
    seen = {"read": 0, "written": 0, "most": 0}
    opened = files.open_input

    def counting_input(*a, **kw):
        source = opened(*a, **kw)
        inner = source.rows

        def rows():
            for row in inner:
                seen["read"] += 1
                seen["most"] = max(seen["most"], seen["read"] - seen["written"])
                yield row
        source.rows = rows()
        return source

    def progress(done, total):
        seen["written"] = done

    monkeypatch.setattr(files, "open_input", counting_input)
    summary = predict_file(predictor, src, tmp_path / "out.csv", n_jobs=n_jobs,
                           chunk_size=chunk_size, progress=progress)
    bound = (2 * n_jobs + 1) * chunk_size
    assert seen["read"] == seen["written"] == 120
    assert chunk_size <= seen["most"] <= bound
    assert summary["max_rows_in_flight"] == seen["most"]


def test_no_domain_leaves_out_its_columns_and_cost(predictor, tmp_path, monkeypatch):
    src = tmp_path / "in.csv"
    write_many(src, 9)
    monkeypatch.setattr("molpipe.chem.domain.Domain.check",
                        lambda *a, **k: pytest.fail("the domain was checked"))
    summary = predict_file(predictor, src, tmp_path / "out.csv", n_jobs=1, domain=False)
    got = read_csv(tmp_path / "out.csv")
    assert list(got[0]) == ["name", "smiles", "pred_freesolv", "error"]
    assert summary["out_of_domain"] is None and len(got) == 9
