import numpy as np
import pytest

from molpipe.kernels.optim import adam_step


def adam_ref(p, g, m, v, lr, b1, b2, eps, wd, scale, t):
    g = scale * g + wd * p
    m = b1 * m + (1 - b1) * g
    v = b2 * v + (1 - b2) * g * g
    p = p - lr * (m / (1 - b1 ** t)) / (np.sqrt(v / (1 - b2 ** t)) + eps)
    return p, m, v


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("wd", [0.0, 0.01])
def test_adam_step_matches_numpy(dtype, wd):
    rng = np.random.default_rng(1)
    p, m, v = rng.normal(size=9).astype(dtype), np.zeros(9, dtype), np.zeros(9, dtype)
    rp, rm, rv = p.astype(float), m.astype(float), v.astype(float)
    for t in range(1, 4):
        g = rng.normal(size=9).astype(dtype)
        adam_step(p, g, m, v, 1e-2, 0.9, 0.999, 1e-8, wd, 0.5, t)
        rp, rm, rv = adam_ref(rp, g.astype(float), rm, rv, 1e-2, 0.9, 0.999, 1e-8, wd, 0.5, t)
    assert p.dtype == dtype
    np.testing.assert_allclose(p, rp, rtol=1e-5)
    np.testing.assert_allclose(v, rv, rtol=1e-4)
