"""Small input files for reader/store tests: a CSV seeded with bad rows, an SDF with a broken record."""

import pytest
from rdkit import Chem

#: (smiles, y1, y2); rows 3, 4 and 6 must be rejected, row 5 keeps a NaN target
CSV_ROWS = [
    ("CCO", "1.5", "2.0"),
    ("c1ccccc1", "0.5", "-1"),
    ("C1CC", "1.0", "1.0"),                 # unparsable
    ("C(C)(C)(C)(C)C", "2.0", "2.0"),       # bad valence
    ("CC(=O)[O-].[Na+]", "n/a", "3.0"),     # non-numeric target: masked, kept
    ("", "1.0", "1.0"),                     # empty cell
    ("[NH4+]", "", "4.0"),                  # missing target: masked, kept
]


@pytest.fixture
def bad_csv(tmp_path):
    path = tmp_path / "seeded.csv"
    lines = ["name,SMILES,y1,y2"] + [f"m{i},{s},{a},{b}" for i, (s, a, b) in enumerate(CSV_ROWS)]
    path.write_text("\n".join(lines) + "\n", encoding="utf-8")
    return path


def _record(smiles, props):
    block = Chem.MolToMolBlock(Chem.MolFromSmiles(smiles))
    items = "".join(f">  <{k}>\n{v}\n\n" for k, v in props.items())
    return block + items + "$$$$\n"


BROKEN = "broken\n  junk\n\n  2  1  0  0  0  0  0  0  0  0999 V2000\nthis is not an atom line\nM  END\n>  <y>\n9.0\n\n$$$$\n"


@pytest.fixture
def sdf_with_broken_record(tmp_path):
    path = tmp_path / "mols.sdf"
    text = (_record("CCO", {"y": "1.0", "label": "a"}) + BROKEN
            + _record("c1ccccc1O", {"y": "3.0", "label": "b"}))
    path.write_text(text, encoding="utf-8")
    return path
