"""The pickle decoder: bit for bit featurize_reference on every bundled set and hostile molecules."""

import csv
import gzip
import io

import numpy as np
import pytest
from rdkit import Chem

from molpipe.chem import compact as C
from molpipe.chem.batch import featurize_batch
from molpipe.chem.expand import compact_graphs
from molpipe.chem.featurize import featurize, featurize_reference
from molpipe.chem.unpickle import BAD_HEADER, MONOMER, NO_RINGS, OK, QUERY, decode
from molpipe.data.registry import list_datasets

FIELDS = ("V", "E", "edge_index", "edge_type", "ring_atoms", "ring_offsets", "ring_system",
          "fragment", "n_rounds", "has_rings")

#: molecules that exercise every corner of the pickle format and of the features
HOSTILE = [
    "[Na+].[Cl-]", "CC(=O)[O-].[Na+]", "[Na+].[Na+].[Na+].[Cl-].[Cl-].[Cl-].O.O.O.[K+].[Br-]",
    "[NH4+]", "[O-2]", "[Fe+10]", "[O-][N+](=O)c1ccccc1", "C[N+](C)(C)CC(=O)[O-]",
    "[13CH4]", "[2H]C([2H])([2H])[2H]", "[999C]", "[2H]OC",
    "[H]C([H])([H])[H]", "[H][H]", "[H]", "[H]N([H])C",
    "F/C=C/F", "F/C=C\\F", "C\\C=C/C", "F/C=C/C=C\\Cl", "C/C=C/C=C/C=C/C", "C[C@H](N)O",
    "C[C@@H](N)O", "C[C@H](N)C(=O)O", "C=C=C", "CC(C)=C=C(C)C", "C[C@]12CC[C@H](C1)C2",
    "[CH3:1]C", "[CH3:200]C", "[NH2:7][CH3:1]", "*C", "*C*", "[*]", "[1*]C", "[*:1]CC[*:2]",
    "[CH3]", "C[O]", "[CH2]", "[CH2]C", "[C]", "[Si]",
    "[CH-]1C=CC=C1.[CH-]1C=CC=C1.[Fe+2]", "[Pt]", "C[Mg]Br", "Cl[Pt](Cl)([NH3])[NH3]",
    "[NH3]->[Pt]<-[NH3]", "C[Hg]C", "[Cu+2].[O-]S(=O)(=O)[O-]", "[U]", "[Og]", "[He]",
    "c1ccccc1", "c1ccc2ccccc2c1", "c1ccc2cc3ccccc3cc2c1", "C1CC2CCC1CC2", "C1CC12CC2",
    "C1CCCCCCCCC1", "C1CCCCCCCCCCCCCCCCCCC1", "C12C3C4C1C5C2C3C45", "c1cc[nH]c1",
    "[Se]1C=CC=C1", "OB(O)c1ccccc1", "C1=CC=CN=C1", "C#N", "C#CC=CC", "N#[N+][O-]",
    "C1CC2CC1C=C2", "C[N+](C)(C)C.[Br-]", "[O-][n+]1ccccc1", "O=[As](O)(O)O",
    "C" * 300, "c1ccccc1" * 50, "C1CCCCC1" * 50,
]


def assert_same_graph(a, b, label=""):
    for f in FIELDS:
        x, y = getattr(a, f), getattr(b, f)
        if isinstance(x, np.ndarray):
            assert x.dtype == y.dtype and x.shape == y.shape and np.array_equal(x, y), (label, f)
        else:
            assert x == y, (label, f)


def dataset_smiles(every: int = 1) -> list[str]:
    """SMILES of every bundled set (every ``every``-th row)."""
    out = []
    for entry in list_datasets():
        opener = gzip.open if entry.path.suffix == ".gz" else open
        with opener(entry.path, "rt", encoding="utf-8", newline="") as f:
            rows = csv.DictReader(f)
            out += [r[entry.smiles_column] for i, r in enumerate(rows) if i % every == 0]
    return out


def assert_batch_matches_reference(items, min_rounds=2, max_rounds=6):
    codes, kept, errors = featurize_batch(items, min_rounds=min_rounds, max_rounds=max_rounds)
    graphs = compact_graphs(codes)
    assert len(graphs) == len(kept) and sorted(kept + [k for k, _ in errors]) == list(
        range(len(items)))
    for k, reason in errors:
        with pytest.raises(Exception, match=None) as err:
            featurize_reference(items[k], min_rounds=min_rounds, max_rounds=max_rounds)
        assert (str(err.value) or type(err.value).__name__) == reason
    for g, k in zip(graphs, kept):
        want = featurize_reference(items[k], min_rounds=min_rounds, max_rounds=max_rounds)
        assert_same_graph(g, want, items[k] if isinstance(items[k], str) else k)
    return codes, kept


def test_hostile_molecules_bit_for_bit():
    codes, kept = assert_batch_matches_reference(HOSTILE)
    assert len(kept) == len(HOSTILE)
    for s in HOSTILE:                                         # the one-molecule entry too
        assert_same_graph(featurize(s), featurize_reference(s), s)


def test_rounds_settings_and_rejects_in_a_batch():
    items = ["C" * 30, "C1CC", "", "CC", "C(C)(C)(C)(C)C", 42, "c1ccccc1"]
    assert_batch_matches_reference(items, min_rounds=1, max_rounds=20)
    _, kept, errors = featurize_batch(items)
    assert kept == [0, 3, 6]
    assert [r for _, r in errors] == ["unparsable SMILES", "empty SMILES", "bad valence",
                                      "not a SMILES string (int)"]


def test_bundled_sets_sample_bit_for_bit():
    assert_batch_matches_reference(dataset_smiles(every=97))


@pytest.mark.slow
def test_every_bundled_molecule_bit_for_bit():
    smiles = dataset_smiles()
    for k in range(0, len(smiles), 5000):
        assert_batch_matches_reference(smiles[k:k + 5000])


def test_wide_pickles_of_more_than_255_atoms():
    mol = Chem.MolFromSmiles("c1ccccc1" * 50)
    assert mol.GetNumAtoms() > 255
    status, codes = decode([mol.ToBinary(), Chem.MolFromSmiles("CCO").ToBinary()], 2, 6)
    assert status.tolist() == [OK, OK] and codes.n_atoms.tolist() == [300, 3]


def test_mols_from_sdf_with_hydrogens_and_conformers():
    mols = []
    for s in ("CCO", "c1ccccc1O", "C[C@H](N)C(=O)O", "F/C=C/F"):
        mol = Chem.AddHs(Chem.MolFromSmiles(s))
        block = Chem.MolToMolBlock(mol)
        mols.append(Chem.MolFromMolBlock(block, removeHs=False))   # explicit H atoms, 2D
        mols.append(Chem.MolFromMolBlock(block))
    with Chem.SDWriter(buf := io.StringIO()) as w:
        w.write(Chem.MolFromSmiles("CC(=O)Nc1ccc(O)cc1"))
    mols += [m for m in Chem.ForwardSDMolSupplier(io.BytesIO(buf.getvalue().encode()))]
    assert all(m.GetNumConformers() for m in mols)
    codes, kept = assert_batch_matches_reference(mols)
    assert len(kept) == len(mols)


def test_unsanitized_mol_is_sanitized_first():
    raw = Chem.MolFromSmiles("c1ccncc1O", sanitize=False)
    assert_same_graph(featurize(raw), featurize_reference("c1ccncc1O"))


@pytest.mark.parametrize("mol, status", [
    (Chem.MolFromSmarts("[C,N]CO"), QUERY),
    (Chem.MolFromSequence("ACD"), MONOMER),
])
def test_what_the_decoder_does_not_read_falls_back(mol, status):
    mol.UpdatePropertyCache(strict=False)
    Chem.FastFindRings(mol)
    assert decode([mol.ToBinary()], 2, 6)[0].tolist() == [status]
    if status == MONOMER:                     # a peptide: sanitized, featurized by RDKit calls
        Chem.SanitizeMol(mol)
        assert_same_graph(featurize(mol), featurize_reference(mol))


def test_no_ring_information_and_bad_headers_fall_back():
    mol = Chem.MolFromSmiles("CCO", sanitize=False)
    mol.UpdatePropertyCache()
    assert decode([mol.ToBinary()], 2, 6)[0].tolist() == [NO_RINGS]
    good = Chem.MolFromSmiles("CCO").ToBinary()
    other_version = good[:8] + (15).to_bytes(4, "little") + good[12:]
    assert decode([b"", good[:20], other_version], 2, 6)[0].tolist() == [BAD_HEADER] * 3


def test_fallbacks_are_spliced_in_order():
    peptide = Chem.MolFromSequence("GA")
    items = ["CCO", peptide, "C1CC", "c1ccccc1", peptide, "CN"]
    codes, kept = assert_batch_matches_reference(items)
    assert kept == [0, 1, 3, 4, 5] and codes.n_atoms.tolist() == [3, 10, 6, 10, 2]


def test_mangled_pickles_never_crash():
    """Cut and flipped pickles: a status for each, and in-range indices for any decoded."""
    rng = np.random.default_rng(0)
    pickles = [Chem.MolFromSmiles(s).ToBinary() for s in HOSTILE[:40]]
    mangled = []
    for p in pickles:
        for _ in range(25):
            b = bytearray(p)
            if rng.random() < 0.3:
                b = b[:rng.integers(0, len(b))]
            for _ in range(rng.integers(1, 4)):
                if b:
                    b[rng.integers(0, len(b))] = rng.integers(0, 256)
            mangled.append(bytes(b))
    status, codes = decode(mangled, 2, 6)
    assert len(status) == len(mangled) and (status == OK).sum() == len(codes)
    ends = np.cumsum(codes.n_atoms)
    for k, (na, nb) in enumerate(zip(codes.n_atoms, codes.n_bonds)):
        b0 = int(np.sum(codes.n_bonds[:k]))
        assert (codes.bonds[b0:b0 + nb] < na).all()
        assert (codes.fragment[ends[k] - na:ends[k]] < max(na, 1)).all()


def test_code_tables_cover_the_vocabularies():
    assert C.ATOM_COLUMNS.shape == (5, 256) and (C.ATOM_COLUMNS >= 0).all()
    assert C.CHIRAL_COLUMN[0] == -1 and C.MASS[6] == np.float32(0.12011)
