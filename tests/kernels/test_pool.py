"""Pooling kernels: numpy references for the forwards, finite differences for the backwards."""

import numpy as np
import pytest

from molpipe.kernels.pool import (attention_bwd, attention_fwd, channels_bwd, channels_fwd,
                                  mask_bwd, mask_fwd, weighted_gated_sum_bwd,
                                  weighted_gated_sum_fwd)

from .fd import check

SEG = np.array([0, 0, 1, 2, 2, 2, 0], np.int32)      # atoms of 3 molecules, not sorted


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_is_a_softmax_per_segment(seed):
    e = np.random.default_rng(seed).normal(size=7) * 5
    alpha = attention_fwd(e, SEG, 3)
    for s in range(3):
        ref = np.exp(e[SEG == s]) / np.exp(e[SEG == s]).sum()
        np.testing.assert_allclose(alpha[SEG == s], ref, rtol=1e-12)


def test_attention_is_stable_for_large_scores():
    alpha = attention_fwd(np.array([1000.0, 999.0, 5.0]), np.array([0, 0, 1], np.int32), 2)
    assert np.isfinite(alpha).all() and alpha[2] == 1.0


@pytest.mark.parametrize("seed", [0, 1, 2])
def test_attention_bwd_finite_differences(seed):
    rng = np.random.default_rng(seed)
    e, w = rng.normal(size=7), rng.normal(size=7)
    alpha = attention_fwd(e, SEG, 3)
    check(lambda: attention_fwd(e, SEG, 3), e, attention_bwd(w, alpha, SEG, 3), w)


@pytest.mark.parametrize("d", [1, 4])
def test_weighted_gated_sum(d):
    rng = np.random.default_rng(d)
    alpha, G, J = rng.normal(size=7), rng.normal(size=(7, d)), rng.normal(size=(7, d))
    ref = np.stack([(alpha[:, None] * G * J)[SEG == s].sum(axis=0) for s in range(3)])
    np.testing.assert_allclose(weighted_gated_sum_fwd(alpha, G, J, SEG, 3), ref, rtol=1e-12)
    w = rng.normal(size=(3, d))
    da, dG, dJ = weighted_gated_sum_bwd(w, alpha, G, J, SEG)
    for x, dx in ((alpha, da), (G, dG), (J, dJ)):
        check(lambda: weighted_gated_sum_fwd(alpha, G, J, SEG, 3), x, dx, w)


@pytest.mark.parametrize("k", [1, 2, 3])
def test_channels(k):
    rng = np.random.default_rng(k)
    S, C = rng.normal(size=(3, 4)), rng.normal(size=(3, k))
    np.testing.assert_allclose(channels_fwd(S, C), np.hstack([C[:, [j]] * S for j in range(k)]))
    w = rng.normal(size=(3, 4 * k))
    check(lambda: channels_fwd(S, C), S, channels_bwd(w, C), w)


def test_mask():
    rng = np.random.default_rng(3)
    X, M, w = rng.normal(size=(3, 4)), (rng.random((3, 4)) > 0.5) * 2.0, rng.normal(size=(3, 4))
    np.testing.assert_array_equal(mask_fwd(X, M), X * M)
    M[0, 0] = 2.0                                     # the check needs one kept entry at least
    check(lambda: mask_fwd(X, M), X, mask_bwd(w, M), w)
