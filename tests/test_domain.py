"""Applicability domain: nearest-neighbour Tanimoto equal to RDKit's, molecules unlike the
training set flagged with their reasons, domain.npz kept safe like the parameters."""

import csv
import json
import shutil

import numpy as np
import pytest
from rdkit import Chem, DataStructs
from rdkit.Chem import rdFingerprintGenerator

from molpipe.chem.domain import FILE, SIMILAR, Domain, fingerprints, nearest_similarity
from molpipe.io.model import ModelError, sha256_file
from molpipe.inference.predict import Predictor
from molpipe.inference.files import predict_file
from tests.test_cli import run
from tests.test_predict import trained_run

TRAIN = ["CCO", "CCCO", "CCCCO", "c1ccccc1O", "Cc1ccccc1O", "CC(=O)Nc1ccc(O)cc1", "ClC(Cl)Cl",
         "CCN(CC)CC", "CC(C)CC(=O)O", "c1ccc2ccccc2c1", "OC1CCCCC1", "CCOC(=O)C"]
#: (SMILES, a word its reason must hold): unlike anything in TRAIN
OUTSIDE = [("[Na+].[Cl-]", "Na"), ("Cl[Pt](Cl)(N)N", "Pt"), ("C[Se]c1ccccc1", "Se"),
           ("CCCCCCCCCCCCCCCCCCCCCCCCCCCCCCO", "heavy atoms")]


def _mols(smiles):
    return [Chem.MolFromSmiles(s) for s in smiles]


def test_nearest_similarity_equals_rdkit_bulk_tanimoto():
    import gzip
    from pathlib import Path

    with gzip.open(Path(__file__).parents[1] / "datasets" / "qm8.csv.gz", "rt") as f:
        rows = list(csv.DictReader(f))[:300]
    smiles = [r["smiles"] for r in rows]
    ref, queries = _mols(smiles[:200]), _mols(smiles[200:])
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    ref_fps = [gen.GetFingerprint(m) for m in ref]
    want = np.array([max(DataStructs.BulkTanimotoSimilarity(gen.GetFingerprint(m), ref_fps))
                     for m in queries])
    got = nearest_similarity(fingerprints(queries), fingerprints(ref))
    np.testing.assert_allclose(got, want, rtol=0, atol=1e-12)
    assert 0 < got.min() < got.max() <= 1


def test_inside_and_outside_with_reasons():
    domain = Domain.from_smiles(TRAIN)
    sim, reasons = domain.check(_mols(TRAIN[:3] + [s for s, _ in OUTSIDE]) + [None])
    np.testing.assert_array_equal(sim[:3], 1.0)           # its own training molecules
    assert reasons[:3] == ["", "", ""]
    for (smiles, word), reason in zip(OUTSIDE, reasons[3:-1]):
        assert word in reason, (smiles, reason)
    assert "unlike the training set" in reasons[3] and sim[3] < SIMILAR
    assert np.isnan(sim[-1]) and reasons[-1] == ""          # no molecule: nothing to say
    assert domain.heavy_atoms == (3, 11)


def test_sample_beyond_max_reference(monkeypatch):
    monkeypatch.setattr("molpipe.chem.domain.MAX_REFERENCE", 5)
    a, b = Domain.from_smiles(TRAIN, seed=1), Domain.from_smiles(TRAIN, seed=1)
    assert a.fps.shape == (5, 32)
    np.testing.assert_array_equal(a.fps, b.fps)


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    return trained_run(tmp_path_factory)


def test_trained_model_keeps_its_domain(run_dir, tmp_path):
    predictor = Predictor.load(run_dir)
    assert predictor.domain is not None
    split = json.loads((run_dir / "split.json").read_text())
    assert predictor.domain.fps.shape[0] == len(split["train"])
    train_smiles = _train_smiles(run_dir, split)
    P, errors, (sim, reasons) = predictor.predict_with_domain(
        train_smiles[:3] + [s for s, _ in OUTSIDE[:3]] + ["C1CC"])
    np.testing.assert_array_equal(sim[:3], 1.0)
    assert "Na" in reasons[3] and "Pt" in reasons[4] and "Se" in reasons[5]
    assert errors[-1] and np.isnan(sim[-1])

    src = tmp_path / "in.csv"
    src.write_text("smiles\n" + "\n".join(train_smiles[:3] + ["[Na+].[Cl-]", "C1CC"]) + "\n")
    summary = predict_file(predictor, src, tmp_path / "out.csv")
    assert summary["out_of_domain"] == 1 and summary["first_out_of_domain"][0][0] == 4
    got = list(csv.DictReader((tmp_path / "out.csv").open()))
    assert [r["in_domain"] for r in got] == ["true", "true", "true", "false", ""]
    assert float(got[0]["similarity"]) == 1.0 and "Na" in got[3]["domain_note"]


def _train_smiles(run_dir, split):
    """The first training molecules of the run on freesolv (every row a molecule: the
    split's indices are the file's rows)."""
    from molpipe.data.registry import resolve_source

    path, _ = resolve_source("freesolv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    assert len(rows) == sum(len(v) for v in split.values())
    return [rows[i]["smiles"] for i in split["train"][:5]]


def _copy(run_dir, tmp_path):
    model = tmp_path / "model"
    shutil.copytree(run_dir / "model", model)
    return model


def _reseal(model):
    """config.json's checksum updated to the (edited) domain.npz: only its content is wrong."""
    cfg = json.loads((model / "config.json").read_text())
    cfg["domain_sha256"] = sha256_file(model / FILE)
    (model / "config.json").write_text(json.dumps(cfg))


def test_altered_domain_is_refused(run_dir, tmp_path):
    model = _copy(run_dir, tmp_path)
    data = bytearray((model / FILE).read_bytes())
    data[len(data) // 2] ^= 0xFF
    (model / FILE).write_bytes(bytes(data))
    with pytest.raises(ModelError, match="checksum"):
        Predictor.load(model)


def test_pickled_or_malformed_domain_is_refused(run_dir, tmp_path):
    model = _copy(run_dir, tmp_path)
    with open(model / FILE, "wb") as f:
        np.savez(f, fps=np.array([object()], dtype=object), elements=np.arange(3),
                 heavy_atoms=np.arange(2))
    _reseal(model)
    with pytest.raises(ModelError):
        Predictor.load(model)
    with open(model / FILE, "wb") as f:
        np.savez(f, fps=np.zeros((2, 7), np.uint64), elements=np.arange(3),
                 heavy_atoms=np.arange(2))
    _reseal(model)
    with pytest.raises(ModelError, match="not a molpipe domain"):
        Predictor.load(model)


def test_model_without_domain_predicts_without_its_columns(run_dir, tmp_path):
    model = _copy(run_dir, tmp_path)
    cfg = json.loads((model / "config.json").read_text())
    del cfg["domain"], cfg["domain_sha256"]
    (model / "config.json").write_text(json.dumps(cfg))
    (model / FILE).unlink()
    predictor = Predictor.load(model)
    assert predictor.domain is None
    src = tmp_path / "in.csv"
    src.write_text("smiles\nCCO\n[Na+].[Cl-]\n")
    summary = predict_file(predictor, src, tmp_path / "out.csv")
    assert summary["out_of_domain"] is None
    header = (tmp_path / "out.csv").read_text().splitlines()[0]
    assert header == "smiles,pred_freesolv,error"


def test_cli_warns_outside_the_domain(run_dir, tmp_path):
    inside = _train_smiles(run_dir, json.loads((run_dir / "split.json").read_text()))[0]
    result = run("predict", "--model", run_dir, inside, "[Na+].[Cl-]", "Cl[Pt](Cl)(N)N")
    assert result.exit_code == 0, result.output
    assert "similarity" in result.stdout and "element Pt" in result.stdout.replace("\n", " ")
    assert "2 of 3 predicted molecules lie outside" in " ".join(result.stderr.split())

    src = tmp_path / "in.csv"
    src.write_text(f"smiles\n{inside}\n[Na+].[Cl-]\n")
    result = run("predict", "--model", run_dir, "--input", src, "--output", tmp_path / "o.csv")
    assert result.exit_code == 0, result.output
    text = " ".join(result.stderr.split())
    assert "1 of 2 predicted molecules lie outside" in text and "row 2:" in text
    result = run("predict", "--model", run_dir, inside)
    assert result.exit_code == 0 and "outside" not in result.stderr


def test_the_domain_read_in_blocks_is_the_domain_read_at_once(monkeypatch):
    """from_smiles parses a block of SMILES at a time; the arrays do not depend on it (and a
    SMILES RDKit cannot read is left out in either)."""
    from molpipe.chem import domain

    smiles = TRAIN + ["not a molecule"] + [s for s, _ in OUTSIDE]
    whole = Domain.from_smiles(smiles).arrays()
    monkeypatch.setattr(domain, "BLOCK", 3)
    blocks = Domain.from_smiles(smiles).arrays()
    for k in whole:
        np.testing.assert_array_equal(blocks[k], whole[k], err_msg=k)
    assert whole["fps"].shape[0] == len(smiles) - 1


#: molecules whose composition is unusual: salts, explicit and isotopic hydrogens, an
#: element outside the featurizer's vocabulary, a dummy atom, a charged metal
VARIED = ["CCO", "[Na+].[Cl-]", "[2H]C([2H])([2H])O", "[H][H]", "[H]C([H])([H])Cl",
          "Cl[Pt](Cl)(N)N", "C[Se]c1ccccc1", "[U]", "*CC", "O=[Xe]=O", "CCCCCCCCCCCCCCCCCCCCCCCCCO",
          "c1ccc2ccccc2c1", "[Fe+2].[O-]C(=O)C"]


def test_fingerprints_are_rdkit_morgan_bits():
    mols = _mols(VARIED) + [None]
    gen = rdFingerprintGenerator.GetMorganGenerator(radius=2, fpSize=2048)
    want = np.zeros((len(mols), 32), np.uint64)
    for i, m in enumerate(mols[:-1]):
        bits = gen.GetFingerprintAsNumPy(m).astype(np.uint8)
        want[i] = np.packbits(bits, bitorder="little").view(np.uint64)
    got = fingerprints(mols)
    np.testing.assert_array_equal(got, want)
    assert got.dtype == np.uint64 and got[:-1].any(axis=1).all() and not got[-1].any()


@pytest.mark.parametrize("train", [TRAIN, TRAIN + ["[Na+].[Cl-]", "C[Se]C", "[2H]C", "*C"]])
def test_check_from_graphs_equals_check_from_atoms(train):
    """Elements and heavy atoms read from the graphs' element columns (a whole chunk at a
    time) give the reasons that walking every Mol's atoms gives."""
    from molpipe.chem.featurize import featurize

    domain = Domain.from_smiles(train)
    mols = _mols(VARIED)
    graphs = [featurize(m) for m in mols]
    mols += [None]
    graphs += [None]
    sim_a, reasons_a = domain.check(mols)
    sim_g, reasons_g = domain.check(mols, graphs)
    np.testing.assert_array_equal(sim_a, sim_g)
    assert reasons_a == reasons_g
    assert any("Pt" in r for r in reasons_g) and any("U " in r for r in reasons_g)
    assert any("heavy atoms" in r for r in reasons_g)
