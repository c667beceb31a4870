import numpy as np
import pytest

from molpipe.kernels.segment import gated_sum_bwd, gated_sum_fwd, segment_sum_bwd, segment_sum_fwd

from .fd import check


@pytest.mark.parametrize("n,d,n_seg", [(1, 1, 1), (7, 3, 2), (20, 5, 6)])
def test_segment_sums_match_numpy(n, d, n_seg):
    rng = np.random.default_rng(n)
    seg = np.sort(rng.integers(0, n_seg, n)).astype(np.int32)
    for dtype in (np.float32, np.float64):
        X = rng.normal(size=(n, d)).astype(dtype)
        G = rng.uniform(size=(n, d)).astype(dtype)
        ref = np.zeros((n_seg, d))
        np.add.at(ref, seg, X.astype(np.float64))
        S = segment_sum_fwd(X, seg, n_seg)
        assert S.dtype == dtype
        np.testing.assert_allclose(S, ref, rtol=1e-5, atol=1e-6)
        ref = np.zeros((n_seg, d))
        np.add.at(ref, seg, G.astype(np.float64) * X)
        np.testing.assert_allclose(gated_sum_fwd(G, X, seg, n_seg), ref, rtol=1e-5, atol=1e-6)


@pytest.mark.parametrize("n,d,n_seg", [(1, 1, 1), (7, 3, 2), (20, 5, 6)])
def test_segment_bwd_finite_differences(n, d, n_seg):
    rng = np.random.default_rng(30 + n)
    seg = rng.integers(0, n_seg, n).astype(np.int32)
    seg[0] = 0
    X, G = rng.normal(size=(n, d)), rng.normal(size=(n, d))
    w = rng.normal(size=(n_seg, d))
    check(lambda: segment_sum_fwd(X, seg, n_seg), X, segment_sum_bwd(w, seg), w)
    dG, dX = gated_sum_bwd(w, G, X, seg)
    check(lambda: gated_sum_fwd(G, X, seg, n_seg), G, dG, w)
    check(lambda: gated_sum_fwd(G, X, seg, n_seg), X, dX, w)
