"""How far predicted uncertainty can be trusted: calibration of Gaussian intervals
``mean ± z σ`` against the errors they should hold, and the one scale factor per target that
recalibrates σ on the validation split.

With z_i = (y_i - μ_i) / σ_i over the observed cells of a target:

- ``spearman``: Spearman's ρ between |y - μ| and σ (does σ rank the errors?);
- ``within_68`` / ``within_95``: the share of errors inside the central 68.27 % and 95 %
  intervals (|z| ≤ 1 and |z| ≤ 1.96);
- ``miscalibration_area``: the mean over confidence levels p in [0, 1] of |observed share
  inside the central p-interval − p| (0: calibrated; 0.5 at most), chemprop's and
  uncertainty-toolbox's definition;
- ``nll``: the mean Gaussian negative log-likelihood (lower is better).

Recalibration (``std_scale``) multiplies σ by ``s = sqrt(mean z²)`` fitted on the validation
split: the s that minimizes the Gaussian NLL of the validation errors.
"""

from __future__ import annotations

import math
from statistics import NormalDist

import numpy as np

#: confidence levels of the calibration curve (and the miscalibration area's integral)
LEVELS = np.linspace(0.0, 1.0, 101)
_Z = np.array([NormalDist().inv_cdf(0.5 + p / 2) if p < 1 else np.inf for p in LEVELS])
NAN = float("nan")


def _cells(y: np.ndarray, mu: np.ndarray, sigma: np.ndarray):
    y, mu, sigma = (np.asarray(a, np.float64).ravel() for a in (y, mu, sigma))
    ok = np.isfinite(y) & np.isfinite(mu) & np.isfinite(sigma) & (sigma > 0)
    return y[ok], mu[ok], sigma[ok]


def ranks(x: np.ndarray) -> np.ndarray:
    """1-based ranks of ``x``, ties sharing the mean of their positions."""
    order = np.argsort(x, kind="mergesort")
    r = np.empty(x.size, np.float64)
    s = x[order]
    starts = np.flatnonzero(np.r_[True, s[1:] != s[:-1]]) if x.size else np.zeros(0, int)
    ends = np.r_[starts[1:], x.size]
    for a, b in zip(starts, ends):
        r[order[a:b]] = (a + b + 1) / 2.0
    return r


def spearman(a: np.ndarray, b: np.ndarray) -> float:
    """Spearman's rank correlation of two 1-D arrays (NaN if either is constant or n < 3)."""
    if a.size < 3:
        return NAN
    ra, rb = ranks(a) - (a.size + 1) / 2, ranks(b) - (b.size + 1) / 2
    den = math.sqrt(float((ra * ra).sum() * (rb * rb).sum()))
    return float((ra * rb).sum() / den) if den > 0 else NAN


def curve(y, mu, sigma) -> tuple[np.ndarray, np.ndarray]:
    """(expected, observed): for every level of ``LEVELS`` the share of errors inside the
    central interval of that probability."""
    y, mu, sigma = _cells(y, mu, sigma)
    if y.size == 0:
        return LEVELS.copy(), np.full(LEVELS.size, np.nan)
    z = np.sort(np.abs(y - mu) / sigma)
    observed = np.searchsorted(z, _Z, side="right") / z.size
    return LEVELS.copy(), observed


def calibration(y, mu, sigma) -> dict:
    """The metrics of the module docstring for one target's cells (NaN where none)."""
    y1, mu1, s1 = _cells(y, mu, sigma)
    if y1.size == 0:
        return {"spearman": NAN, "within_68": NAN, "within_95": NAN,
                "miscalibration_area": NAN, "nll": NAN, "n": 0}
    err = np.abs(y1 - mu1)
    z = err / s1
    expected, observed = curve(y1, mu1, s1)
    gap = np.abs(observed - expected)
    area = float(((gap[1:] + gap[:-1]) / 2 * np.diff(expected)).sum())
    nll = float(np.mean(0.5 * np.log(2 * np.pi * s1 ** 2) + 0.5 * z ** 2))
    return {"spearman": spearman(err, s1), "within_68": float((z <= 1.0).mean()),
            "within_95": float((z <= 1.959964).mean()), "miscalibration_area": area,
            "nll": nll, "n": int(y1.size)}


def calibration_table(targets: list[str], Y, P, S) -> dict[str, dict]:
    """{target: calibration(...)} over the columns of (n, n_targets) arrays."""
    return {t: calibration(Y[:, j], P[:, j], S[:, j]) for j, t in enumerate(targets)}


def std_scale(Y, P, S) -> list[float]:
    """Per target, the factor s = sqrt(mean z²) that makes σ s fit the errors (1.0 for a
    target without observed cells)."""
    out = []
    for j in range(np.asarray(Y).shape[1]):
        y, mu, s = _cells(Y[:, j], P[:, j], S[:, j])
        z2 = ((y - mu) / s) ** 2
        out.append(float(math.sqrt(z2.mean())) if z2.size and z2.mean() > 0 else 1.0)
    return out
