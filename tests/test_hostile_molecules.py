"""Hostile molecules: every input is featurized into a valid MolGraph or rejected with a reason.

Random strings, mutated bundled SMILES and a hand-written zoo go through ``featurize`` and
``build_store``. ``MOLPIPE_HOSTILE_EXAMPLES=5000`` runs a longer soak of the same properties.
"""

import csv
import os
import random

import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from rdkit import Chem, rdBase

from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, MAX_ATOMS, FeaturizationError, featurize
from molpipe.chem.molgraph import BOND_TYPES
from molpipe.data.build import build_store
from molpipe.data.registry import get_dataset
from molpipe.data.store import GraphStore

EXAMPLES = int(os.environ.get("MOLPIPE_HOSTILE_EXAMPLES", "150"))
HOSTILE = settings(max_examples=EXAMPLES, deadline=None, derandomize=True,
                   suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])

#: characters SMILES are written with, so random strings often parse
ALPHABET = "CNOSPFIBrcnos()[]=#-+@/\\.%0123456789*:HlaeKMgiuTt "


def _macrocycle(n: int) -> str:
    return "C1" + "C" * (n - 2) + "C1"


#: (input, expected): "ok" must featurize; any other string is a piece of the reject reason
ZOO = [
    ("[CH-]1C=CC=C1.[CH-]1C=CC=C1.[Fe+2]", "ok"),          # ferrocene (ionic form)
    ("[Pt]", "ok"), ("C[Mg]Br", "ok"), ("Cl[Pt](Cl)([NH3])[NH3]", "ok"),  # metals, cisplatin
    ("[CH3]", "ok"), ("C[O]", "ok"), ("[CH2]", "ok"),                     # radicals
    ("[NH4+]", "ok"), ("[O-2]", "ok"), ("[Fe+10]", "ok"),                  # charges
    ("C[N+](C)(C)CC(=O)[O-]", "ok"), ("NCC(=O)O", "ok"),                   # zwitterions
    ("[Na+].[Na+].[Na+].[Cl-].[Cl-].[Cl-].O.O.O.[K+].[Br-]", "ok"),        # many fragments
    ("[13CH4]", "ok"), ("[2H]C([2H])([2H])[2H]", "ok"), ("[999C]", "ok"),  # isotopes
    ("[H]C([H])([H])[H]", "ok"), ("[H][H]", "ok"), ("[H]", "ok"),          # explicit H
    ("C[C@H](N)C(=O)O", "ok"), ("F/C=C/F", "ok"), ("C\\C=C/C", "ok"),      # stereo
    (_macrocycle(MAX_ATOMS), "ok"), (_macrocycle(MAX_ATOMS + 1), "too many atoms"),
    ("C", "ok"), ("[He]", "ok"), ("[Og]", "ok"),                           # lone atoms
    ("[*]", "ok"), ("*C*", "ok"), ("[1*]C", "ok"), ("[*:1]CC[*:2]", "ok"),  # dummy atoms
    ("c1cccc1", "kekulize"), ("n1cccc1", "kekulize"), ("C(C)(C)(C)(C)C", "valence"),
    ("", "empty"), ("   ", "empty"), ("\t\r\n", "empty"),
    ("C" * 100_000, "too long"), ("c" * 19_999, "too many atoms"), ("C1CC1" * 4000, "too many"),
    ("CCO C", "whitespace"), ("CC\tO", "whitespace"),
    ("CCé", "non-ASCII"), ("ü", "non-ASCII"), ("CC\ud800", "non-ASCII"), ("C\u3000C", "non-ASCII"),
    ("C\x00C", "NUL"), ("\x00", "NUL"),
    ("C1CC", "unparsable"), ("((((", "unparsable"), ("[C@@@@H]", "unparsable"), (".", "unparsable"),
]


def check_graph(g, min_rounds=2, max_rounds=6):
    """Shapes, dtypes, finite features, edges paired and in range, rings and plan in range."""
    n, m = g.n_atoms, g.n_edges
    assert n >= 1
    assert g.V.dtype == np.float32 and g.V.shape == (n, ATOM_DIM) and np.isfinite(g.V).all()
    assert g.E.dtype == np.float32 and g.E.shape == (m, BOND_DIM) and np.isfinite(g.E).all()
    assert g.edge_index.dtype == np.int32 and g.edge_index.shape == (2, m)
    assert g.edge_type.dtype == np.int32 and g.edge_type.shape == (m,)
    assert m % 2 == 0 and ((g.edge_index >= 0) & (g.edge_index < n)).all()
    assert (g.edge_index[0] != g.edge_index[1]).all()
    assert ((g.edge_type >= 0) & (g.edge_type < len(BOND_TYPES))).all()
    assert (np.diff(g.edge_type) >= 0).all()
    fwd = {(int(s), int(d)): k for k, (s, d) in enumerate(g.edge_index.T)}
    assert len(fwd) == m                                            # no duplicate edges
    for (s, d), k in fwd.items():
        r = fwd[(d, s)]
        assert g.edge_type[k] == g.edge_type[r] and np.array_equal(g.E[k], g.E[r])
    for a in (g.ring_atoms, g.ring_offsets, g.ring_system, g.fragment):
        assert a.dtype == np.int32
    assert g.ring_offsets[0] == 0 and g.ring_offsets[-1] == g.ring_atoms.shape[0]
    assert (np.diff(g.ring_offsets) >= 3).all()
    assert ((g.ring_atoms >= 0) & (g.ring_atoms < n)).all()
    assert g.ring_system.shape == (g.n_rings,)
    assert ((g.ring_system >= 0) & (g.ring_system < max(g.n_rings, 1))).all()
    assert g.fragment.shape == (n,) and g.fragment.min() == 0
    assert set(g.fragment.tolist()) == set(range(int(g.fragment.max()) + 1))
    assert (g.fragment[g.edge_index[0]] == g.fragment[g.edge_index[1]]).all()
    assert isinstance(g.n_rounds, int) and min_rounds <= g.n_rounds <= max_rounds
    assert isinstance(g.has_rings, bool) and g.has_rings == (g.n_rings > 0)


def try_featurize(text, **kw):
    """The MolGraph (checked) or the reject reason; anything else fails the test."""
    try:
        g = featurize(text, **kw)
    except FeaturizationError as err:
        assert str(err).strip(), f"empty reason for {text[:50]!r}"
        return str(err)
    check_graph(g, kw.get("min_rounds", 2), kw.get("max_rounds", 6))
    return g


def bundled_smiles():
    with open(get_dataset("esol").path, newline="", encoding="utf-8") as f:
        rows = list(csv.DictReader(f))
    column = get_dataset("esol").smiles_column
    return [r[column] for r in rows]


SEEDS = bundled_smiles()


@st.composite
def mutated(draw):
    """A bundled SMILES with a few characters inserted, deleted or swapped."""
    s = list(draw(st.sampled_from(SEEDS)))
    for _ in range(draw(st.integers(1, 4))):
        op = draw(st.sampled_from(("insert", "delete", "swap")))
        i = draw(st.integers(0, max(len(s) - 1, 0)))
        if op == "insert":
            s.insert(i, draw(st.sampled_from(ALPHABET)))
        elif op == "delete" and s:
            del s[i]
        elif len(s) > 1:
            j = draw(st.integers(0, len(s) - 1))
            s[i], s[j] = s[j], s[i]
    return "".join(s)


HOSTILE_TEXT = st.one_of(
    st.text(max_size=60),                                                # any unicode
    st.text(alphabet=st.characters(codec=None, categories=None), max_size=20),  # surrogates
    st.text(alphabet=ALPHABET, max_size=40),                             # SMILES-like noise
    mutated(),
)


@pytest.mark.parametrize("text, expected", ZOO, ids=[f"zoo{i}" for i in range(len(ZOO))])
def test_zoo(text, expected):
    out = try_featurize(text)
    if expected == "ok":
        assert not isinstance(out, str), f"{text[:40]!r} rejected: {out}"
    else:
        assert isinstance(out, str) and expected.lower() in out.lower(), out


def test_zoo_chemistry():
    ferrocene = featurize(ZOO[0][0])
    assert ferrocene.n_atoms == 11 and ferrocene.fragment.max() == 2 and ferrocene.n_rings == 2
    salt = featurize("[Na+].[Na+].[Na+].[Cl-].[Cl-].[Cl-].O.O.O.[K+].[Br-]")
    assert salt.n_atoms == 11 and salt.n_edges == 0 and salt.fragment.max() == 10
    ring = featurize(_macrocycle(MAX_ATOMS))
    assert ring.n_rings == 1 and ring.n_rounds == 6 and ring.n_edges == 2 * MAX_ATOMS


def test_atom_limit_is_a_parameter():
    assert isinstance(try_featurize("CCCC", max_atoms=3), str)
    check_graph(featurize(_macrocycle(600), max_atoms=600))


@HOSTILE
@given(HOSTILE_TEXT)
def test_featurize_never_crashes(text):
    try_featurize(text)


@HOSTILE
@given(mutated(), st.integers(1, 3), st.integers(0, 4))
def test_featurize_rounds_in_range(text, lo, extra):
    try_featurize(text, min_rounds=lo, max_rounds=lo + extra)


def _unsanitized(text):
    with rdBase.BlockLogs():
        return Chem.MolFromSmiles(text, sanitize=False)


@pytest.mark.parametrize("text, expected", [
    ("c1ccccc1", "ok"), ("C1CCO1", "ok"), ("c1cccc1", "kekulize"), ("C(C)(C)(C)(C)C", "valence"),
])
def test_unsanitized_mol_is_sanitized_or_rejected(text, expected):
    out = try_featurize(_unsanitized(text))
    assert (not isinstance(out, str)) if expected == "ok" else expected in out
    assert try_featurize(Chem.Mol()) == "no atoms"


@HOSTILE
@given(HOSTILE_TEXT)
def test_featurize_mol_never_crashes(text):
    mol = _unsanitized(text) if text.isascii() and "\x00" not in text else None
    if mol is not None:
        try_featurize(mol)


def _hostile_rows(n, seed=0):
    """A deterministic mix of the zoo, mutated bundled SMILES and noise that a CSV can hold."""
    rng = random.Random(seed)
    rows = [t for t, _ in ZOO if t.encode("utf-8", "surrogatepass") == t.encode("utf-8", "replace")]
    while len(rows) < n:
        s = list(rng.choice(SEEDS))
        for _ in range(rng.randint(1, 4)):
            i = rng.randrange(len(s) + 1)
            s.insert(i, rng.choice(ALPHABET + ",\"\n'"))
        rows.append("".join(s) if rng.random() < 0.7
                    else "".join(rng.choice(ALPHABET) for _ in range(rng.randint(0, 30))))
    return rows


@pytest.mark.parametrize("n_jobs", [1, 2])
def test_build_store_counts_add_up(tmp_path, n_jobs):
    texts = _hostile_rows(400)
    path = tmp_path / "hostile.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        w = csv.writer(f)
        w.writerow(["smiles", "y"])
        w.writerows([t, i] for i, t in enumerate(texts))
    summary = build_store(path, tmp_path / "store", n_jobs=n_jobs, chunk_size=37)
    assert summary["rows_read"] == len(texts)
    assert summary["rows_kept"] + summary["rows_rejected"] == summary["rows_read"]
    with open(tmp_path / "store" / "rejects.csv", newline="", encoding="utf-8") as f:
        rejects = list(csv.DictReader(f))
    assert len(rejects) == summary["rows_rejected"] > 0
    assert all(r["reason"].strip() for r in rejects)
    store = GraphStore.open(tmp_path / "store")
    kept = store.source_row.tolist()
    assert sorted(kept + [int(r["row"]) for r in rejects]) == list(range(1, len(texts) + 1))
    assert store.targets[:, 0].tolist() == [k - 1 for k in kept]           # rows stay aligned
    for i in range(0, len(store), 17):
        check_graph(store[i])
        assert isinstance(featurize(texts[kept[i] - 1]), type(store[i]))
    for r in rejects:                                                       # same verdict
        assert isinstance(try_featurize(texts[int(r["row"]) - 1]), str)


@pytest.fixture(scope="module")
def predictor(tmp_path_factory):
    pytest.importorskip("molpipe.inference.predict")
    from molpipe.inference.predict import Predictor

    from tests.test_predict import trained_run

    return Predictor.load(trained_run(tmp_path_factory))


def test_predict_hostile_inputs(predictor):
    texts = [t for t, _ in ZOO] + _hostile_rows(len(ZOO) + 150, seed=1)[len(ZOO):]
    texts += SEEDS[:50] + [_unsanitized("c1cccc1"), _unsanitized("c1ccccc1"), None, 3.5]
    P, errors = predictor.predict(texts)
    assert P.shape == (len(texts), len(predictor.targets)) and len(errors) == len(texts)
    for text, p, err in zip(texts, P, errors):
        verdict = try_featurize(text) if isinstance(text, (str, Chem.Mol)) else "not SMILES"
        if isinstance(verdict, str):                      # rejected: reason, no prediction
            assert err and np.isnan(p).all(), (text, err)
        else:
            assert err == "" and np.isfinite(p).all(), (str(text)[:40], err)
    assert sum(e == "" for e in errors) > 80 and sum(e != "" for e in errors) > 80


def test_predict_file_keeps_every_row(predictor, tmp_path):
    from molpipe.inference.files import predict_file

    texts = _hostile_rows(300, seed=2)
    path = tmp_path / "in.csv"
    with open(path, "w", newline="", encoding="utf-8") as f:
        csv.writer(f).writerows([["id", "smiles"]] + [[i, t] for i, t in enumerate(texts)])
    summary = predict_file(predictor, path, tmp_path / "out.csv", n_jobs=1, chunk_size=64)
    with open(tmp_path / "out.csv", newline="", encoding="utf-8") as f:
        out = list(csv.DictReader(f))
    assert summary["rows"] == len(out) == len(texts)
    assert [int(r["id"]) for r in out] == list(range(len(texts)))
    assert summary["failed"] == sum(bool(r["error"]) for r in out) > 0
