"""Central finite differences for the gradient tests (float64)."""

import numpy as np

EPS = 1e-6
TOL = 1e-6


def num_grad(f, x: np.ndarray, eps: float = EPS) -> np.ndarray:
    """d f() / d x by central differences; ``f`` reads ``x`` (perturbed in place)."""
    g = np.zeros_like(x)
    flat, gflat = x.reshape(-1), g.reshape(-1)
    for i in range(flat.size):
        old = flat[i]
        flat[i] = old + eps
        fp = f()
        flat[i] = old - eps
        fm = f()
        flat[i] = old
        gflat[i] = (fp - fm) / (2 * eps)
    return g


def rel_err(a: np.ndarray, b: np.ndarray) -> float:
    """||a - b|| / max(||a||, ||b||) (0 when both vanish)."""
    a, b = np.asarray(a, np.float64), np.asarray(b, np.float64)
    den = max(np.linalg.norm(a), np.linalg.norm(b))
    return 0.0 if den == 0 else float(np.linalg.norm(a - b) / den)


def check(f_out, x: np.ndarray, analytic: np.ndarray, w: np.ndarray) -> None:
    """Assert ``analytic`` == d sum(w * f_out()) / d x."""
    g = num_grad(lambda: float(np.sum(w * f_out())), x)
    assert analytic.shape == x.shape
    assert np.linalg.norm(g) > 0, "degenerate check: numeric gradient is zero"
    err = rel_err(analytic, g)
    assert err < TOL, f"relative error {err:.2e}"
