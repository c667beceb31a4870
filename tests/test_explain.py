"""Explanations: pooled contributions add up exactly to the value minus its reference,
gradient x input matches central differences of the prediction on scaled atom states, the
additive baseline's terms are exact, bad SMILES get their reason; maps and CSVs written."""

import csv
import xml.etree.ElementTree as ET

import numpy as np
import pytest

from molpipe.data.instance import pack
from molpipe.inference.drawing import safe_name, write_explanations
from molpipe.inference.explain import explain, explain_instance
from molpipe.inference.fingerprint import readout_input

from .toolkit_model import BAD, SMILES, predictor as make_predictor


def one(predictor, s):
    return pack([predictor.featurize(s)], np.full((1, len(predictor.targets)), np.nan))


def value_with(predictor, inst, H):
    """f (prediction or logit) of ``inst`` when the readout receives the atom states ``H``."""
    loss = predictor.network.stages["loss"]
    _, _, Y = predictor.network.stages["readout"].vectors({"H": H}, inst)
    if loss.task != "regression":
        return Y[0]
    return loss.predictions(Y, loss.baseline(inst))[0]


@pytest.mark.parametrize("aggregation,task", [("mean+norm", "regression"),
                                              ("sum", "regression"),
                                              ("attention", "classification")])
def test_pooled_contributions_add_up_to_value_minus_reference(tmp_path, aggregation, task):
    pred = make_predictor(tmp_path / "m", aggregation=aggregation, task=task)
    p = pred.network.stages["readout"].params
    loss = pred.network.stages["loss"]
    results = explain(pred, SMILES, "pooled")
    P, _ = pred.predict(SMILES)
    for s, r, pr in zip(SMILES, results, P):
        inst = one(pred, s)
        _, Z, _ = pred.network.stages["readout"].vectors(readout_input(pred.network, inst), inst)
        D = (Z[0] > 0).astype(float)
        if task == "regression":
            np.testing.assert_allclose(r.value, pr, rtol=1e-10, atol=1e-10)
            ref = loss.buffers["std"] * (p["b_2"] + (p["b_1"] * D) @ p["W_2"]) + loss.buffers["mean"]
        else:                                    # the logit of the predicted probability
            np.testing.assert_allclose(1 / (1 + np.exp(-r.value)), pr, rtol=1e-10)
            ref = p["b_2"] + (p["b_1"] * D) @ p["W_2"]
        assert r.contributions.shape == (inst.n_atoms, 2)
        np.testing.assert_allclose(r.contributions.sum(axis=0), r.value - ref,
                                   rtol=1e-9, atol=1e-9)
        np.testing.assert_allclose(r.reference, ref, rtol=1e-9, atol=1e-9)


def test_gradient_times_input_matches_central_differences(tmp_path):
    pred = make_predictor(tmp_path / "m", aggregation="mean+norm")
    loss = pred.network.stages["loss"]
    eps = 1e-5
    for s in ["CC(=O)Nc1ccc(O)cc1", "ClC(Cl)Cl", "[Na+].[Cl-]"]:
        inst = one(pred, s)
        value, C, _ = explain_instance(pred, inst, "gradient")
        H = readout_input(pred.network, inst)["H"]
        base = inst.V.astype(float) @ loss.buffers["atom_ref"]
        assert np.abs(base).max() > 1e-3                     # the baseline is exercised
        for a in range(inst.n_atoms):
            up, down = H.copy(), H.copy()
            up[a] *= 1 + eps
            down[a] *= 1 - eps
            fd = (value_with(pred, inst, up) - value_with(pred, inst, down)) / (2 * eps)
            np.testing.assert_allclose(C[a] - base[a], fd, rtol=1e-6, atol=1e-8)
        np.testing.assert_allclose(value, value_with(pred, inst, H), rtol=1e-12)


def test_baseline_terms_are_the_whole_story_of_a_constant_network(tmp_path):
    """With the readout's output weights zero the network adds a constant: the
    contributions (either method) are the baseline's per-atom terms exactly."""
    pred = make_predictor(tmp_path / "m")
    pred.network.stages["readout"].params["W_2"][:] = 0.0
    loss = pred.network.stages["loss"]
    for method in ("gradient", "pooled"):
        for s, r in zip(SMILES, explain(pred, SMILES, method)):
            inst = one(pred, s)
            want = inst.V.astype(float) @ loss.buffers["atom_ref"]
            np.testing.assert_allclose(r.contributions, want, rtol=1e-12, atol=1e-12)
            np.testing.assert_allclose(r.value - r.contributions.sum(0), r.reference)


def test_bad_smiles_get_their_reason(tmp_path):
    pred = make_predictor(tmp_path / "m")
    smiles = [SMILES[0]] + [b for b, _ in BAD] + [SMILES[1]]
    results = explain(pred, smiles)
    assert not isinstance(results[0], str) and not isinstance(results[-1], str)
    for r, (_, reason) in zip(results[1:-1], BAD):
        assert isinstance(r, str) and r.startswith(reason)
    with pytest.raises(ValueError, match="method must be one of gradient, pooled"):
        explain(pred, SMILES[:1], "shap")


def test_files_written(tmp_path):
    pred = make_predictor(tmp_path / "m", targets=("log S", "b"))
    smiles = ["CC(=O)Nc1ccc(O)cc1", "C1CC", "C"]       # one bad, one of a single atom
    results = explain(pred, smiles)
    out = tmp_path / "out"
    summary = write_explanations(results, smiles, out)
    assert summary["drawn"] == 2 and summary["failed"] == 1
    for i in (0, 2):
        for t in ("log_S", "b"):
            png, svg = out / f"{i}_{t}.png", out / f"{i}_{t}.svg"
            assert png.read_bytes()[:8] == b"\x89PNG\r\n\x1a\n"
            root = ET.fromstring(svg.read_bytes())
            assert root.tag.endswith("svg")
    assert not list(out.glob("1_*"))
    rows = list(csv.DictReader(open(out / "contributions.csv")))
    n_atoms = 11
    assert len(rows) == 2 * (n_atoms + 1)
    assert list(rows[0]) == ["molecule", "smiles", "atom", "element", "target", "contribution"]
    first = [r for r in rows if r["molecule"] == "0" and r["target"] == "log S"]
    np.testing.assert_allclose([float(r["contribution"]) for r in first],
                               results[0].contributions[:, 0])
    assert [r["element"] for r in first][:4] == ["C", "C", "O", "N"]
    errors = list(csv.DictReader(open(out / "errors.csv")))
    assert errors == [{"molecule": "1", "smiles": "C1CC", "error": "unparsable SMILES"}]
    mols = list(csv.DictReader(open(out / "molecules.csv")))
    assert len(mols) == 4 and float(mols[0]["value"]) == pytest.approx(results[0].value[0])


def test_safe_name():
    assert safe_name("measured log solubility (mol/L)") == "measured_log_solubility_mol_L"
    assert safe_name("///") == "target"
