"""Explanations drawn and written: RDKit similarity maps (PNG and SVG) of each molecule's
atom contributions per target, and the contributions as one CSV.

In ``DIR``: ``<index>_<target>.png`` and ``.svg`` per molecule (its position among the
SMILES given, from 0) and target (its name with characters other than letters, digits,
``.``, ``-`` made ``_``); ``contributions.csv`` (molecule, smiles, atom, element, target,
contribution); ``molecules.csv`` (molecule, smiles, target, value, reference, method);
``errors.csv`` (molecule, smiles, error) for the SMILES that could not be explained.
The maps colour atoms that raise the explained value red and those that lower it blue,
scaled to the molecule's largest contribution for that target.
"""

from __future__ import annotations

import csv
import re
from collections.abc import Sequence
from pathlib import Path

import numpy as np

#: the similarity map's colours at the most negative, zero and most positive contribution
COLOURS = [(0.23, 0.30, 0.75), (1.0, 1.0, 1.0), (0.71, 0.02, 0.15)]
SIZE = (400, 400)


def safe_name(target: str) -> str:
    """``target`` as a file name part: runs of other characters than ``[A-Za-z0-9.-]`` -> ``_``."""
    return re.sub(r"[^A-Za-z0-9.-]+", "_", target).strip("_") or "target"


def draw_map(mol, weights: np.ndarray, kind: str, size: tuple[int, int] = SIZE) -> bytes:
    """The similarity map of per-atom ``weights`` on ``mol`` as PNG or SVG bytes (``kind``);
    a one-atom molecule is drawn plain (a map needs two atoms)."""
    from rdkit.Chem.Draw import SimilarityMaps, rdMolDraw2D

    d = (rdMolDraw2D.MolDraw2DCairo(*size) if kind == "png"
         else rdMolDraw2D.MolDraw2DSVG(*size))
    if mol.GetNumAtoms() < 2:
        d.DrawMolecule(rdMolDraw2D.PrepareMolForDrawing(mol))
    else:
        w = [float(v) for v in weights]
        scale = max(max(abs(v) for v in w), 1e-12)
        SimilarityMaps.GetSimilarityMapFromWeights(mol, w, draw2d=d, colorMap=COLOURS,
                                                   scale=scale)
    d.FinishDrawing()
    text = d.GetDrawingText()
    return text.encode("utf-8") if isinstance(text, str) else text


def write_explanations(results: Sequence, smiles: Sequence[str], out_dir: str | Path) -> dict:
    """Draw and write ``results`` (``explain.explain``'s list) of ``smiles`` into ``out_dir``.

    Returns
    -------
    dict : drawn (molecules), failed, files (paths written), errors ((index, smiles, reason)).
    """
    out = Path(out_dir)
    out.mkdir(parents=True, exist_ok=True)
    files, errors, drawn = [], [], 0
    with open(out / "contributions.csv", "w", newline="", encoding="utf-8") as fc, \
            open(out / "molecules.csv", "w", newline="", encoding="utf-8") as fm:
        wc, wm = csv.writer(fc, lineterminator="\n"), csv.writer(fm, lineterminator="\n")
        wc.writerow(["molecule", "smiles", "atom", "element", "target", "contribution"])
        wm.writerow(["molecule", "smiles", "target", "value", "reference", "method"])
        for i, (s, r) in enumerate(zip(smiles, results)):
            if isinstance(r, str):
                errors.append((i, s, r))
                continue
            elements = [a.GetSymbol() for a in r.mol.GetAtoms()]
            for t, target in enumerate(r.targets):
                wm.writerow([i, s, target, repr(float(r.value[t])),
                             repr(float(r.reference[t])), r.method])
                for a, el in enumerate(elements):
                    wc.writerow([i, s, a, el, target, repr(float(r.contributions[a, t]))])
                for kind in ("png", "svg"):
                    path = out / f"{i}_{safe_name(target)}.{kind}"
                    path.write_bytes(draw_map(r.mol, r.contributions[:, t], kind))
                    files.append(path)
            drawn += 1
    with open(out / "errors.csv", "w", newline="", encoding="utf-8") as fe:
        we = csv.writer(fe, lineterminator="\n")
        we.writerow(["molecule", "smiles", "error"])
        we.writerows(errors)
    files += [out / "contributions.csv", out / "molecules.csv", out / "errors.csv"]
    return {"drawn": drawn, "failed": len(errors), "files": files, "errors": errors}
