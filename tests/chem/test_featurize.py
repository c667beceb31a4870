"""Chemistry facts the featurizer must get right."""

import numpy as np
import pytest
from rdkit import Chem

from molpipe.chem import featurize as F
from molpipe.chem.featurize import ATOM_DIM, BOND_DIM, FeaturizationError, featurize
from molpipe.chem.molgraph import BOND_TYPES

AROMATIC = BOND_TYPES.index("aromatic")


def check_arrays(g):
    """Dtypes, shapes and internal consistency every MolGraph must satisfy."""
    assert g.V.dtype == np.float32 and g.V.shape == (g.n_atoms, ATOM_DIM)
    assert g.E.dtype == np.float32 and g.E.shape == (g.n_edges, BOND_DIM)
    assert g.edge_index.dtype == np.int32 and g.edge_index.shape == (2, g.n_edges)
    assert g.edge_type.dtype == np.int32 and (np.diff(g.edge_type) >= 0).all()
    for a in (g.ring_atoms, g.ring_offsets, g.ring_system, g.fragment):
        assert a.dtype == np.int32
    assert g.fragment.shape == (g.n_atoms,)
    assert g.ring_offsets[0] == 0 and g.ring_offsets[-1] == g.ring_atoms.shape[0]
    # every directed edge has its reverse, with the same type and features
    pairs = {(int(s), int(d)): k for k, (s, d) in enumerate(g.edge_index.T)}
    for (s, d), k in pairs.items():
        r = pairs[(d, s)]
        assert g.edge_type[k] == g.edge_type[r] and np.array_equal(g.E[k], g.E[r])
    assert g.has_rings == (g.n_rings > 0)


def test_benzene():
    g = featurize("c1ccccc1")
    check_arrays(g)
    assert g.n_atoms == 6 and g.V[:, F._AROMATIC].sum() == 6
    assert g.n_edges == 12 and (g.edge_type == AROMATIC).sum() == 12
    assert g.n_rings == 1 and sorted(g.ring_atoms.tolist()) == list(range(6))
    assert g.V[:, F._RING_SIZE0 + 6 - 3].sum() == 6 and g.V[:, F._RING_SIZE0].sum() == 0


def test_naphthalene_two_rings_one_system():
    g = featurize("c1ccc2ccccc2c1")
    check_arrays(g)
    assert g.n_rings == 2 and g.ring_system.tolist() == [0, 0]


def test_separate_ring_systems():
    g = featurize("c1ccccc1CCC1CC1")                      # benzene and cyclopropane, linked
    check_arrays(g)
    assert g.n_rings == 2 and len(set(g.ring_system.tolist())) == 2


def test_cyclohexane_and_hexane_plans_differ():
    ring, chain = featurize("C1CCCCC1"), featurize("CCCCCC")
    assert ring.plan == (2, True)                          # diameter 3 -> ceil(3/2) = 2
    assert chain.plan == (3, False)                        # diameter 5 -> 3
    assert ring.V[:, F._IN_RING].all() and not chain.V[:, F._IN_RING].any()


def test_rounds_clipped():
    long_chain = featurize("C" * 30)                       # diameter 29
    assert long_chain.n_rounds == 6
    assert featurize("C" * 30, max_rounds=20).n_rounds == 15
    assert featurize("CC", min_rounds=3, max_rounds=4).n_rounds == 3


def test_bonds_grouped_by_type():
    g = featurize("C#CC=CC")
    check_arrays(g)
    counts = np.bincount(g.edge_type, minlength=4)
    assert counts.tolist() == [4, 2, 2, 0]
    assert (g.E[:, :4].argmax(axis=1) == g.edge_type).all()


@pytest.mark.parametrize("smiles, n_frag", [("[Na+].[Cl-]", 2), ("CC(=O)[O-].[Na+]", 2)])
def test_salts_keep_all_fragments(smiles, n_frag):
    g = featurize(smiles)
    check_arrays(g)
    assert g.n_atoms == Chem.MolFromSmiles(smiles).GetNumAtoms()
    assert len(set(g.fragment.tolist())) == n_frag
    # no edge crosses fragments
    assert (g.fragment[g.edge_index[0]] == g.fragment[g.edge_index[1]]).all()


@pytest.mark.parametrize("smiles", ["C", "[NH4+]", "[13CH4]", "[H]C([H])([H])[H]", "[Cl-]"])
def test_one_atom(smiles):
    g = featurize(smiles)
    check_arrays(g)
    assert g.n_atoms == 1 and g.E.shape == (0, BOND_DIM) and g.edge_index.shape == (2, 0)
    assert g.plan == (2, False)


def test_charge_and_hydrogens_encoded():
    ammonium, methane = featurize("[NH4+]"), featurize("[13CH4]")
    assert not np.array_equal(ammonium.V, methane.V)
    assert np.array_equal(methane.V, featurize("C").V)     # isotope label ignored
    assert np.array_equal(methane.V, featurize("[H]C([H])([H])[H]").V)   # explicit H removed
    charge = slice(F._STARTS[2], F._STARTS[3])
    assert ammonium.V[0, charge].argmax() == F.CHARGES.index(1)


def test_stereo_featurizes():
    cis, trans = featurize("F/C=C\\F"), featurize("F/C=C/F")
    chiral = featurize("C[C@H](N)O")
    for g in (cis, trans, chiral):
        check_arrays(g)
    assert cis.E[:, F._STEREO].sum() == 2                   # the stereo double bond, both ways
    # which side: Z (cis) or E (trans), both ways
    assert cis.E[:, F._Z_LIKE].sum() == 2 and cis.E[:, F._E_LIKE].sum() == 0
    assert trans.E[:, F._E_LIKE].sum() == 2 and trans.E[:, F._Z_LIKE].sum() == 0
    # the chiral centre is tagged (CW or CCW); its mirror image gets the other tag
    mirror = featurize("C[C@@H](N)O")
    tags = slice(F._CHIRAL0, F._CHIRAL_OTHER)
    assert chiral.V[1, tags].sum() == 1 and mirror.V[1, tags].sum() == 1
    assert not np.array_equal(chiral.V[1, tags], mirror.V[1, tags])
    assert chiral.V[[0, 2, 3], F._CHIRAL0:F._CHIRAL_OTHER + 1].sum() == 0


def test_version_one_columns_are_a_prefix():
    """A version-1 model reads the first V1_DIMS columns: they are version 1's features."""
    g = featurize("C[C@H](N)C(=O)O")
    a, b = F.V1_DIMS
    assert g.V[:, a:].shape[1] == F.ATOM_DIM - a == 4 and g.E[:, b:].shape[1] == 2
    assert g.V[1, F._MASS] == pytest.approx(0.12011, abs=1e-4)     # carbon / 100


def test_other_element_slot():
    g = featurize("[U]")
    assert g.V[0, F._STARTS[0] + len(F.ELEMENTS)] == 1


def test_accepts_mol():
    mol = Chem.MolFromSmiles("c1ccncc1O")
    assert np.array_equal(featurize(mol).V, featurize("c1ccncc1O").V)


@pytest.mark.parametrize("smiles, reason", [
    ("C1CC", "unparsable SMILES"), ("xyz", "unparsable SMILES"),
    ("C(C)(C)(C)(C)C", "bad valence"), ("", "empty SMILES"), ("   ", "empty SMILES"),
    ("c1cccc1", "kekulize"),
])
def test_bad_smiles_reasons(smiles, reason):
    with pytest.raises(FeaturizationError, match=reason):
        featurize(smiles)


def test_too_many_atoms():
    with pytest.raises(FeaturizationError, match=r"too many atoms \(12 > 10\)"):
        featurize("C" * 12, max_atoms=10)


def test_featurization_error_is_value_error():
    assert issubclass(FeaturizationError, ValueError)


def test_ring_size_bits_match_rdkit():
    smiles = "C1CC2CCC1CC2"                                 # bicyclo[2.2.2]octane
    g, mol = featurize(smiles), Chem.MolFromSmiles(smiles)
    for i, atom in enumerate(mol.GetAtoms()):
        for k, size in enumerate(F.RING_SIZES):
            assert g.V[i, F._RING_SIZE0 + k] == atom.IsInRingSize(size)


def naive_atom_features(mol):
    """Per-atom Python reference for V (the slow, obvious way)."""
    rows = []
    for a in mol.GetAtoms():
        def onehot(value, choices):
            return [float(value == c) for c in choices] + [float(value not in choices)]
        sizes = [float(a.IsInRingSize(s)) for s in F.RING_SIZES]
        tag = a.GetChiralTag()
        chiral = ([float(tag == t) for t in F.CHIRAL_TAGS]
                  + [float(tag not in F.CHIRAL_TAGS and tag != Chem.ChiralType.CHI_UNSPECIFIED)])
        mass = Chem.GetPeriodicTable().GetAtomicWeight(a.GetSymbol()) / 100
        rows.append(onehot(a.GetSymbol(), F.ELEMENTS) + onehot(a.GetDegree(), F.DEGREES)
                    + onehot(a.GetFormalCharge(), F.CHARGES)
                    + onehot(a.GetTotalNumHs(), F.HYDROGENS)
                    + onehot(a.GetHybridization(), F.HYBRIDIZATIONS)
                    + [float(a.GetIsAromatic()), float(a.IsInRing())] + sizes + chiral + [mass])
    return np.array(rows, dtype=np.float32)


def naive_bonds(mol):
    """{(src, dst): (type, features)} from per-bond RDKit calls."""
    out = {}
    for b in mol.GetBonds():
        t = {"SINGLE": 0, "DOUBLE": 1, "TRIPLE": 2, "AROMATIC": 3}.get(str(b.GetBondType()), 0)
        stereo = b.GetStereo() not in (Chem.BondStereo.STEREONONE, Chem.BondStereo.STEREOANY)
        side = str(b.GetStereo())
        e = [float(k == t) for k in range(4)] + [float(b.GetIsConjugated()),
                                                   float(b.IsInRing()), float(stereo),
                                                   float(side in ("STEREOZ", "STEREOCIS")),
                                                   float(side in ("STEREOE", "STEREOTRANS"))]
        i, j = b.GetBeginAtomIdx(), b.GetEndAtomIdx()
        out[(i, j)] = out[(j, i)] = (t, e)
    return out


@pytest.mark.parametrize("featurize", [F.featurize, F.featurize_reference])
def test_matches_naive_reference(featurize):
    from molpipe.data.registry import get_dataset
    import csv
    with open(get_dataset("lipo").path, newline="") as f:
        smiles = [r["smiles"] for _, r in zip(range(150), csv.DictReader(f))]
    smiles += ["C[N+](C)(C)C.[Br-]", "[O-][N+](=O)c1ccccc1", "C1CC2CC1C=C2", "OB(O)c1ccccc1",
               "F/C=C/C=C\\Cl", "[Se]1C=CC=C1", "C1CCCCCCCCC1", "[2H]OC"]
    for s in smiles:
        mol = Chem.MolFromSmiles(s)
        g = featurize(s)
        check_arrays(g)
        assert np.array_equal(g.V, naive_atom_features(mol)), s
        ref = naive_bonds(mol)
        assert len(ref) == g.n_edges
        for k, (i, j) in enumerate(g.edge_index.T.tolist()):
            t, e = ref[(i, j)]
            assert g.edge_type[k] == t and g.E[k].tolist() == e, s
        D = Chem.GetDistanceMatrix(mol)
        diameter = D[D < 1e7].max()
        assert g.n_rounds == min(max(int(np.ceil(diameter / 2)), 2), 6)
        assert g.fragment.max() + 1 == len(Chem.GetMolFrags(mol))


@pytest.mark.parametrize("featurize", [F.featurize, F.featurize_reference])
def test_explicit_hydrogen_mol(featurize):
    mol = Chem.AddHs(Chem.MolFromSmiles("CCO"))
    g = featurize(mol)
    check_arrays(g)
    assert g.n_atoms == 9 and np.array_equal(g.V, naive_atom_features(mol))


def test_dative_bond_is_single():
    g = featurize("[NH3]->[Pt]<-[NH3]")
    check_arrays(g)
    assert g.n_edges == 4 and (g.edge_type == BOND_TYPES.index("single")).all()
