"""Target scaling: the centre and scale that standardize each regression target.

``standard`` is the training split's mean and standard deviation (chemprop's); ``robust``
is its median and interquartile range / 1.349 (the standard deviation of a normal
distribution with that IQR), so that a few wild values (a unit error, an outlier assay) do
not squash every other molecule's target towards zero. A target without values, or with
no spread, gets centre 0 (or its value) and unit scale.
"""

from __future__ import annotations

import numpy as np

SCALINGS = ("standard", "robust")
_IQR_TO_SD = 1.3489795003921634          # the IQR of a unit normal distribution


def target_scale(Y: np.ndarray, task: str, how: str = "standard") -> tuple[np.ndarray, np.ndarray]:
    """(centre, scale): (n_targets,) float64 each from the training targets ``Y`` (NaN missing).

    Classification targets are not scaled: (0, 1).
    """
    if how not in SCALINGS:
        raise ValueError(f"target scaling must be one of {', '.join(SCALINGS)}, got {how!r}")
    Y = np.asarray(Y, np.float64)
    n_t = Y.shape[1]
    centre, scale = np.zeros(n_t), np.ones(n_t)
    if task != "regression":
        return centre, scale
    for j in range(n_t):
        y = Y[:, j][np.isfinite(Y[:, j])]
        if y.size == 0:
            continue
        if how == "standard":
            centre[j], s = y.mean(), y.std()
        else:
            q1, centre[j], q3 = np.percentile(y, (25, 50, 75))
            s = (q3 - q1) / _IQR_TO_SD
            if not s > 0:                  # more than half the values equal: fall back
                s = y.std()
        scale[j] = s if np.isfinite(s) and s > 0 else 1.0
    return centre, scale


BASELINES = ("additive", "none")


def summed_features(graphs) -> np.ndarray:
    """(n_molecules, d_v) float64: each molecule's atom features summed over its atoms (its
    counts of elements, degrees, hydrogens, ... and its mass / 100)."""
    return np.stack([np.asarray(g.V, np.float64).sum(axis=0) for g in graphs])


def additive_baseline(S: np.ndarray, Y: np.ndarray, task: str, ridge: float = 1.0) -> np.ndarray:
    """(d_v, n_targets) float64: the ridge least-squares fit of each regression target to the
    molecules' summed atom features ``S`` (summed_features), zero for classification.

    A group-contribution model, as QM9's per-element atom references: ``S @ atom_ref`` plus
    a constant carries what is additive over atoms (energies, heat capacity, surface areas
    are nearly all of it), and the network learns only what is left. Rows with a missing
    target are left out of that target's fit; ``ridge`` (in squared count units) settles the
    columns that always sum to the atom count. The constant is not part of ``atom_ref``: the
    target scaling's centre, fitted after it, carries it.
    """
    S = np.asarray(S, np.float64)
    Y = np.asarray(Y, np.float64)
    ref = np.zeros((S.shape[1], Y.shape[1]))
    if task != "regression":
        return ref
    for j in range(Y.shape[1]):
        ok = np.isfinite(Y[:, j])
        if ok.sum() < 2:
            continue
        s, y = S[ok], Y[ok, j]
        s_c, y_c = s - s.mean(axis=0), y - y.mean()
        ref[:, j] = np.linalg.solve(s_c.T @ s_c + ridge * np.eye(S.shape[1]), s_c.T @ y_c)
    return ref
