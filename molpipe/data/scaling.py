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


def instance_sums(inst) -> np.ndarray:
    """(n_mols, d_v) float64: ``summed_features`` of the molecules packed in ``inst`` (their
    atoms are contiguous, in molecule order)."""
    n = inst.n_mols
    counts = np.bincount(inst.atom_mol, minlength=n)
    S = np.zeros((n, inst.V.shape[1]))
    has = counts > 0
    if has.any():
        starts = np.concatenate([[0], np.cumsum(counts)[:-1]])
        S[has] = np.add.reduceat(np.asarray(inst.V, np.float64), starts[has], axis=0)
    return S


class AdditiveFit:
    """``additive_baseline`` over chunks of molecules: running sums of the summed features
    and targets (shifted by the first chunk's means, so that the centred sums keep their
    digits), per target over the rows where it is known.

    Fields
    ------
    n : (n_targets,) rows known           sum_s : (n_targets, d_v)   sum_y : (n_targets,)
    ss : (n_targets, d_v, d_v) sum s sᵀ    sy : (n_targets, d_v) sum s y
    """

    def __init__(self, d_v: int, n_targets: int):
        self.n = np.zeros(n_targets)
        self.sum_s, self.sum_y = np.zeros((n_targets, d_v)), np.zeros(n_targets)
        self.ss, self.sy = np.zeros((n_targets, d_v, d_v)), np.zeros((n_targets, d_v))
        self.shift_s = self.shift_y = None

    def add(self, S: np.ndarray, Y: np.ndarray) -> "AdditiveFit":
        """Add molecules: summed features ``S`` (n, d_v) and targets ``Y`` (n, n_targets)."""
        S, Y = np.asarray(S, np.float64), np.asarray(Y, np.float64)
        if self.shift_s is None:
            self.shift_s = S.mean(axis=0) if len(S) else np.zeros(S.shape[1])
            known = np.isfinite(Y)
            self.shift_y = np.where(known.any(axis=0),
                                    np.where(known, Y, 0).sum(axis=0) / np.maximum(known.sum(axis=0), 1),
                                    0.0)
        s_all, y_all = S - self.shift_s, Y - self.shift_y
        full = None
        for j in range(Y.shape[1]):
            ok = np.isfinite(y_all[:, j])
            if ok.all():
                full = s_all.T @ s_all if full is None else full
                s, y, ss = s_all, y_all[:, j], full
            else:
                s, y = s_all[ok], y_all[ok, j]
                ss = s.T @ s
            self.n[j] += len(y)
            self.sum_s[j] += s.sum(axis=0)
            self.sum_y[j] += y.sum()
            self.ss[j] += ss
            self.sy[j] += s.T @ y
        return self

    def solve(self, ridge: float = 1.0) -> np.ndarray:
        """(d_v, n_targets) float64: the ridge fit of each target with >= 2 known rows."""
        d = self.sum_s.shape[1]
        ref = np.zeros((d, len(self.n)))
        for j, n in enumerate(self.n):
            if n < 2:
                continue
            m, my = self.sum_s[j] / n, self.sum_y[j] / n
            A = self.ss[j] - n * np.outer(m, m)
            b = self.sy[j] - n * m * my
            ref[:, j] = np.linalg.solve(A + ridge * np.eye(d), b)
        return ref


def additive_baseline(S: np.ndarray, Y: np.ndarray, task: str, ridge: float = 1.0) -> np.ndarray:
    """(d_v, n_targets) float64: the ridge least-squares fit of each regression target to the
    molecules' summed atom features ``S`` (summed_features), zero for classification.

    A group-contribution model, as QM9's per-element atom references: ``S @ atom_ref`` plus
    a constant carries what is additive over atoms (energies, heat capacity, surface areas
    are nearly all of it), and the network learns only what is left. Rows with a missing
    target are left out of that target's fit; ``ridge`` (in squared count units) settles the
    columns that always sum to the atom count. The constant is not part of ``atom_ref``: the
    target scaling's centre, fitted after it, carries it. (``AdditiveFit`` adds the
    molecules chunk by chunk.)
    """
    S = np.asarray(S, np.float64)
    Y = np.asarray(Y, np.float64)
    if task != "regression":
        return np.zeros((S.shape[1], Y.shape[1]))
    return AdditiveFit(S.shape[1], Y.shape[1]).add(S, Y).solve(ridge)
