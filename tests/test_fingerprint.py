"""Learned fingerprints: the vectors are what the readout's MLP reads, streamed files (.npy,
.csv; CSV, SDF, SMILES inputs) equal the in-memory vectors whatever the chunking, bad rows
get NaN and their reason."""

import csv
import gzip

import numpy as np
import pytest
from rdkit import Chem

from molpipe.data.errors import DataError
from molpipe.data.instance import pack
from molpipe.inference.fingerprint import fingerprint, fingerprint_file
from molpipe.inference.fpfiles import NpyWriter
from molpipe.kernels.activations import relu_fwd
from molpipe.kernels.readout import readout_fwd
from molpipe.nn.readout import channel_scales

from .toolkit_model import BAD, SMILES, predictor as make_predictor


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    return make_predictor(tmp_path_factory.mktemp("fp") / "model")


def direct_pooled(predictor, smiles):
    """h of one molecule from the stages and the readout kernel, called by hand."""
    g = predictor.featurize(smiles)
    inst = pack([g], np.full((1, 2), np.nan))
    net = predictor.network
    x = {}
    for name, step in net.path(inst):
        if name == "readout":
            break
        x = net.stages[name].forward(None, step, x, inst, False)
    r = net.stages["readout"]
    p, H = r.params, x["H"]
    C = channel_scales(r.aggregation, inst.atom_mol, 1, H.dtype)
    none = np.zeros((0, 0), H.dtype)
    X = np.ascontiguousarray(inst.V[:, :p["U_g"].shape[0]], dtype=H.dtype)
    out = readout_fwd(H, X, p["W_g"], p["U_g"], p["b_g"], p["W_j"], p["U_j"], p["b_j"],
                      p.get("w_a", np.zeros((0, 1), H.dtype)), p["W_1"], p["b_1"], p["W_2"],
                      p["b_2"], inst.atom_mol, 1, C, none, none)
    return out[5][0]


@pytest.mark.parametrize("aggregation", ["mean+norm", "attention"])
def test_vectors_are_what_the_readout_mlp_reads(tmp_path, aggregation):
    pred = make_predictor(tmp_path / "m", aggregation=aggregation)
    F, errors = fingerprint(pred, SMILES)
    assert errors == [""] * len(SMILES)
    assert F.dtype == np.float32 and F.shape == (len(SMILES), pred.network.stages[
        "readout"].params["W_1"].shape[0])
    for s, f in zip(SMILES, F):
        np.testing.assert_allclose(f, direct_pooled(pred, s), rtol=1e-6, atol=1e-7)
    # the MLP on the vectors gives the model's predictions
    p, loss = pred.network.stages["readout"].params, pred.network.stages["loss"]
    Y = relu_fwd(F.astype(np.float64) @ p["W_1"] + p["b_1"]) @ p["W_2"] + p["b_2"]
    P, _ = pred.predict(SMILES)
    base = np.array([loss.baseline(pack([pred.featurize(s)], np.zeros((1, 2))))[0]
                     for s in SMILES])
    np.testing.assert_allclose(loss.predictions(Y, base), P, rtol=1e-5, atol=1e-5)
    Z, _ = fingerprint(pred, SMILES, layer="hidden")
    np.testing.assert_allclose(Z, relu_fwd(F.astype(np.float64) @ p["W_1"] + p["b_1"]),
                               rtol=1e-5, atol=1e-6)


def write_csv(path, smiles):
    opener = gzip.open if path.suffix == ".gz" else open
    with opener(path, "wt", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["id", "SMILES"])
        w.writerows([[f"m{i}", s] for i, s in enumerate(smiles)])


def mixed():
    """SMILES with the bad ones between the good, and the rows that fail."""
    rows = SMILES[:3] + [b for b, _ in BAD[:2]] + SMILES[3:] + [BAD[2][0]]
    return rows, [i for i, s in enumerate(rows) if s in {b for b, _ in BAD}]


@pytest.mark.parametrize("n_jobs,chunk_size", [(1, 2), (1, 1000), (2, 3)])
def test_npy_rows_in_order_whatever_the_chunks(predictor, tmp_path, n_jobs, chunk_size):
    rows, bad = mixed()
    src = tmp_path / "in.csv.gz"
    write_csv(src, rows)
    out = tmp_path / "fp.npy"
    summary = fingerprint_file(predictor, src, out, n_jobs=n_jobs, chunk_size=chunk_size)
    F = np.load(out)
    want, errors = fingerprint(predictor, rows)
    assert F.shape == want.shape and summary["rows"] == len(rows)
    np.testing.assert_array_equal(F, want)            # NaN rows compare equal too
    assert np.isnan(F[bad]).all() and not np.isnan(np.delete(F, bad, axis=0)).any()
    assert summary["failed"] == len(bad) and summary["errors_output"]
    listed = list(csv.DictReader(open(tmp_path / "fp.errors.csv")))
    assert [int(r["row"]) for r in listed] == [i + 1 for i in bad]
    assert [r["error"] for r in listed] == [errors[i] for i in bad]
    assert listed[0]["id"] == f"m{bad[0]}" and listed[0]["error"].startswith("unparsable")
    assert np.load(out, mmap_mode="r").shape == F.shape        # a valid header to map too


def test_csv_output_round_trips_float32(predictor, tmp_path):
    rows, bad = mixed()
    src = tmp_path / "in.csv"
    write_csv(src, rows)
    out = tmp_path / "fp.csv"
    fingerprint_file(predictor, src, out, n_jobs=1, chunk_size=4)
    got = list(csv.DictReader(open(out)))
    want, errors = fingerprint(predictor, rows)
    d = want.shape[1]
    assert list(got[0]) == ["id", "SMILES"] + [f"fp_{j}" for j in range(d)] + ["error"]
    for i, r in enumerate(got):
        assert r["error"] == errors[i] and r["id"] == f"m{i}"
        cells = [r[f"fp_{j}"] for j in range(d)]
        if i in bad:
            assert cells == [""] * d and r["error"]
        else:
            np.testing.assert_array_equal(np.array(cells, np.float32), want[i])


def test_sdf_and_smi_inputs(predictor, tmp_path):
    want, _ = fingerprint(predictor, SMILES)
    sdf = tmp_path / "in.sdf"
    with Chem.SDWriter(str(sdf)) as w:
        for s in SMILES:
            w.write(Chem.MolFromSmiles(s))
    fingerprint_file(predictor, sdf, tmp_path / "sdf.npy", n_jobs=1)
    np.testing.assert_allclose(np.load(tmp_path / "sdf.npy"), want, rtol=1e-5, atol=1e-6)
    smi = tmp_path / "in.smi.gz"
    with gzip.open(smi, "wt") as f:
        f.write("smiles name\n# a comment\n\n")
        f.writelines(f"{s} mol {i}\n" for i, s in enumerate(SMILES + ["C1CC"]))
    fingerprint_file(predictor, smi, tmp_path / "smi.csv", n_jobs=1)
    got = list(csv.DictReader(open(tmp_path / "smi.csv")))
    assert [r["smiles"] for r in got] == SMILES + ["C1CC"]
    assert got[1]["name"] == "mol 1" and got[-1]["error"] == "unparsable SMILES"
    np.testing.assert_array_equal(np.array([r["fp_0"] for r in got[:-1]], np.float32),
                                  want[:, 0])


def test_bad_outputs_are_refused(predictor, tmp_path):
    src = tmp_path / "in.csv"
    write_csv(src, SMILES[:2])
    with pytest.raises(DataError, match="must end in .npy or .csv"):
        fingerprint_file(predictor, src, tmp_path / "fp.txt")
    (tmp_path / "fp.npy").write_bytes(b"old")
    with pytest.raises(DataError, match="exists; pass --overwrite"):
        fingerprint_file(predictor, src, tmp_path / "fp.npy")
    assert (tmp_path / "fp.npy").read_bytes() == b"old"
    with pytest.raises(DataError, match="no such file"):
        fingerprint_file(predictor, tmp_path / "none.smi", tmp_path / "new.npy")
    with pytest.raises(ValueError, match="layer must be one of pooled, hidden"):
        fingerprint_file(predictor, src, tmp_path / "new.npy", layer="last")


@pytest.mark.parametrize("n", [0, 1, 5])
def test_npy_header_rewritten_for_the_rows_written(tmp_path, n):
    path = tmp_path / "a.npy"
    rows = np.arange(3 * n, dtype=np.float32).reshape(n, 3)
    with open(path, "w+b") as f:
        w = NpyWriter(f, 3)
        for k in range(n):                      # one row at a time
            w.write(rows[k:k + 1])
        w.close()
    got = np.load(path)
    assert got.shape == (n, 3)
    np.testing.assert_array_equal(got, rows)
    assert path.stat().st_size == NpyWriter.HEADER + rows.nbytes


def test_npy_header_has_room_for_a_huge_count():
    import io
    w = NpyWriter(io.BytesIO(), 4096)
    assert len(w._header(10**15)) == len(w._header(0)) == NpyWriter.HEADER


@pytest.mark.parametrize("n_jobs,chunk_size", [(1, 3), (2, 2)])
def test_rows_in_flight_are_bounded(predictor, tmp_path, n_jobs, chunk_size):
    """Rows read and not yet written stay within ``2 n_jobs + 1`` chunks while the .npy
    grows chunk by chunk (its size at each progress call: every row written so far)."""
    rows = (SMILES + [b for b, _ in BAD]) * 6
    src = tmp_path / "in.csv"
    write_csv(src, rows)
    out = tmp_path / "fp.npy"
    sizes = []

    def progress(done, total):
        tmp = [p for p in tmp_path.iterdir() if p.name.startswith(".fp.npy.tmp")]
        sizes.append((done, tmp[0].stat().st_size))

    summary = fingerprint_file(predictor, src, out, n_jobs=n_jobs, chunk_size=chunk_size,
                               progress=progress)
    assert chunk_size <= summary["max_rows_in_flight"] <= (2 * n_jobs + 1) * chunk_size
    d = summary["width"]
    assert [s for _, s in sizes] == [128 + 4 * d * done for done, _ in sizes]   # flushed
    assert sizes[-1][0] == len(rows) == np.load(out).shape[0]
