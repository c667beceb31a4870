"""Target scaling: standard and robust centres and scales, and the degenerate targets."""

import warnings

import numpy as np
import pytest

from molpipe.data.scaling import (AdditiveFit, additive_baseline, instance_sums,
                                  summed_features, target_scale)


def test_standard_is_mean_and_sd_of_the_known_values():
    Y = np.array([[1.0, np.nan], [2.0, 5.0], [4.0, 7.0]])
    c, s = target_scale(Y, "regression")
    np.testing.assert_allclose(c, [7 / 3, 6.0])
    np.testing.assert_allclose(s, [np.std([1, 2, 4]), 1.0])


def test_robust_ignores_a_wild_value():
    rng = np.random.default_rng(0)
    y = rng.normal(3.0, 2.0, size=(2000, 1))
    wild = np.vstack([y, [[1e6]]])
    c, s = target_scale(wild, "regression", "robust")
    assert c[0] == pytest.approx(3.0, abs=0.15) and s[0] == pytest.approx(2.0, rel=0.1)
    assert target_scale(wild, "regression", "standard")[1][0] > 1000     # what robust avoids


def test_degenerate_targets_get_unit_scale_quietly():
    Y = np.array([[np.nan, 2.0], [np.nan, 2.0]])
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        for how in ("standard", "robust"):
            c, s = target_scale(Y, "regression", how)
            np.testing.assert_array_equal(s, [1.0, 1.0])
            np.testing.assert_array_equal(c, [0.0, 2.0])


def test_classification_is_not_scaled_and_unknown_names_the_choices():
    c, s = target_scale(np.array([[0.0], [1.0]]), "classification", "robust")
    assert c.tolist() == [0.0] and s.tolist() == [1.0]
    with pytest.raises(ValueError, match="standard, robust"):
        target_scale(np.zeros((2, 1)), "regression", "minmax")


def test_additive_baseline_recovers_group_contributions_and_skips_missing():
    rng = np.random.default_rng(0)
    S = rng.integers(0, 8, size=(300, 4)).astype(float)
    contributions = np.array([1.5, -2.0, 0.25, 3.0])
    Y = np.stack([S @ contributions + 7.0, S @ contributions[::-1]], axis=1)
    Y[::3, 0] = np.nan                                 # missing cells leave their rows out
    Y[5, 1] = np.nan
    ref = additive_baseline(S, Y, "regression", ridge=1e-9)
    np.testing.assert_allclose(ref[:, 0], contributions, atol=1e-6)
    np.testing.assert_allclose(ref[:, 1], contributions[::-1], atol=1e-6)


def test_additive_baseline_is_zero_for_classification_and_empty_targets():
    S = np.ones((4, 3))
    assert not additive_baseline(S, np.ones((4, 2)), "classification").any()
    assert not additive_baseline(S, np.full((4, 1), np.nan), "regression").any()


def test_summed_features_sums_atoms_of_each_molecule():
    class G:
        def __init__(self, V):
            self.V = np.asarray(V, np.float32)

    S = summed_features([G([[1, 0], [1, 2]]), G([[0, 5]])])
    np.testing.assert_array_equal(S, [[2, 2], [0, 5]])


def _centred_fit(S, y, ridge):
    """The fit written out: centred normal equations over the known rows."""
    ok = np.isfinite(y)
    s, y = S[ok], y[ok]
    s_c, y_c = s - s.mean(axis=0), y - y.mean()
    return np.linalg.solve(s_c.T @ s_c + ridge * np.eye(S.shape[1]), s_c.T @ y_c)


@pytest.mark.parametrize("chunk", [1, 7, 300])
def test_additive_fit_over_chunks_is_the_fit_over_all_rows(chunk):
    rng = np.random.default_rng(1)
    S = rng.integers(0, 30, size=(300, 5)).astype(float) + 1000.0   # far from zero: shifts
    Y = np.stack([S @ rng.normal(size=5) + rng.normal(size=300), rng.normal(size=300)], axis=1)
    Y[::4, 1] = np.nan
    fit = AdditiveFit(5, 2)
    for lo in range(0, 300, chunk):
        fit.add(S[lo:lo + chunk], Y[lo:lo + chunk])
    ref = fit.solve(ridge=1.0)
    for j in range(2):
        np.testing.assert_allclose(ref[:, j], _centred_fit(S, Y[:, j], 1.0), rtol=1e-9, atol=1e-12)
    assert fit.n.tolist() == [300, 225]


def test_instance_sums_are_the_summed_features_of_the_packed_molecules():
    from molpipe.chem.featurize import featurize
    from molpipe.data.instance import pack

    graphs = [featurize(s) for s in ("CCO", "c1ccccc1O", "[Na+].[Cl-]", "C")]
    inst = pack(graphs, np.zeros((4, 1)))
    np.testing.assert_allclose(instance_sums(inst), summed_features(graphs), rtol=1e-12)
