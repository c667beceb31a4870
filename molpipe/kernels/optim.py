"""Optimizer updates on flat (1-d, contiguous) views of one parameter; in place.

Scalars are cast to the parameter's dtype so float32 updates stay float32.
"""

import numpy as np
from numba import njit


@njit(nogil=True, cache=True, error_model="numpy")
def adam_step(p, g, m, v, lr, beta1, beta2, eps, weight_decay, scale, t):
    """One Adam step (L2 weight decay added to the gradient, bias-corrected), in place.

    ``g' = scale g + wd p``; ``m = b1 m + (1-b1) g'``; ``v = b2 v + (1-b2) g'^2``;
    ``p -= lr (m / (1-b1^t)) / (sqrt(v / (1-b2^t)) + eps)``.
    """
    f = p.dtype.type
    one = f(1.0)
    b1 = f(beta1)
    b2 = f(beta2)
    c1 = f(1.0 / (1.0 - beta1 ** t))
    c2 = f(1.0 / (1.0 - beta2 ** t))
    lr_ = f(lr)
    eps_ = f(eps)
    wd = f(weight_decay)
    sc = f(scale)
    for i in range(p.shape[0]):
        gi = sc * g[i] + wd * p[i]
        m[i] = b1 * m[i] + (one - b1) * gi
        v[i] = b2 * v[i] + (one - b2) * gi * gi
        p[i] -= lr_ * (m[i] * c1) / (np.sqrt(v[i] * c2) + eps_)


@njit(nogil=True, cache=True, error_model="numpy")
def average_step(avg, p, beta):
    """Exponential moving average of a parameter, in place: ``avg = beta avg + (1 - beta) p``."""
    f = p.dtype.type
    b = f(beta)
    one = f(1.0)
    for i in range(p.shape[0]):
        avg[i] = b * avg[i] + (one - b) * p[i]
