"""float32 kernels compute in float32: no float64 widening in the compiled code."""

import re

import numpy as np
import pytest
from numba import njit

from molpipe.kernels import activations, dense, embed, finite, gru, loss, optim, pool, rings
from molpipe.kernels import typed_message as tm

rng = np.random.default_rng(0)
N, D, NE = 6, 4, 8


def f32(*shape):
    return rng.normal(size=shape).astype(np.float32)


i32 = np.array([0, 1, 2, 3, 4, 5, 0, 1], np.int32)
ROUNDS = np.full(N, 2, np.int32)
RA, RO = np.array([0, 1, 2, 2, 3, 4], np.int32), np.array([0, 3, 6], np.int32)
PLAN = tm.pair_plan(i32[::-1].copy(), i32 % 4, N, 4)
CALLS = [
    (dense.dense_fwd, (f32(N, D), f32(D, 3), f32(3))),
    (dense.dense_bwd, (f32(N, D), f32(D, 3), f32(N, 3))),
    (dense.dense_bwd_params, (f32(N, D), f32(N, 3))),
    (activations.tanh_fwd, (f32(N, D),)),
    (activations.tanh_bwd, (f32(N, D), f32(N, D))),
    (activations.sigmoid_fwd, (f32(N, D),)),
    (activations.sigmoid_bwd, (f32(N, D), f32(N, D))),
    (activations.relu_fwd, (f32(N, D),)),
    (activations.relu_bwd, (f32(N, D), f32(N, D))),
    (tm.typed_message_fwd, (f32(N, D), f32(N, D), f32(4, D, D), i32, *PLAN)),
    (tm.typed_message_bwd, (f32(N, D), f32(PLAN[0].shape[0], D), f32(4, D, D), i32, *PLAN)),
    (finite.add_count_nonfinite, (f32(4, D, D), f32(4, D, D))),     # g_W_m += dW_m
    (embed.embed_fwd, (f32(N, D), f32(NE, 3), i32[::-1].copy(), f32(D, D), f32(D), f32(3, D),
                       f32(D))),
    (embed.embed_bwd, (f32(N, D), f32(N, D), f32(N, D), f32(N, 3), f32(N), np.tanh(f32(N, D)),
                       f32(D, D), f32(D), f32(3, D), f32(D))),
    (gru.gru_fwd, (f32(N, 3 * D), f32(N, 3 * D), f32(N, D), ROUNDS, 0)),
    (gru.gru_bwd, (f32(N, D), f32(N, D), f32(N, D), f32(N, 3 * D), ROUNDS, 0)),
    (rings.ring_pool_fwd, (f32(N, D), RA, RO)),
    (rings.ring_pool_bwd, (f32(2, D), RA, RO, N)),
    (rings.ring_broadcast_fwd, (f32(N, D), f32(2, D), RA, RO)),
    (rings.ring_broadcast_bwd, (f32(N, D), RA, RO)),
    (pool.attention_fwd, (f32(N), i32[:N] % 2, 2)),
    (pool.attention_bwd, (f32(N), f32(N), i32[:N] % 2, 2)),
    (pool.weighted_gated_sum_fwd, (f32(N), f32(N, D), f32(N, D), i32[:N] % 2, 2)),
    (pool.weighted_gated_sum_bwd, (f32(2, D), f32(N), f32(N, D), f32(N, D), i32[:N] % 2)),
    (pool.channels_fwd, (f32(2, D), f32(2, 2))),
    (pool.channels_bwd, (f32(2, 2 * D), f32(2, 2))),
    (pool.mask_fwd, (f32(N, D), f32(N, D))),
    (pool.mask_bwd, (f32(N, D), f32(N, D))),
    (loss.masked_mse_fwd, (f32(N, 2), f32(N, 2))),
    (loss.masked_bce_fwd, (f32(N, 2), f32(N, 2))),
    (loss.masked_mse_bwd, (f32(N, 2), f32(N, 2), 1.0)),
    (loss.masked_bce_bwd, (f32(N, 2), f32(N, 2), 1.0)),
    (loss.masked_gaussian_nll_fwd, (f32(N, 4), f32(N, 2))),
    (loss.masked_gaussian_nll_bwd, (f32(N, 4), f32(N, 2), 1.0)),
    (loss.gaussian_variance, (f32(N, 2),)),
    (optim.adam_step, (f32(9), f32(9), f32(9), np.abs(f32(9)), 1e-3, 0.9, 0.999, 1e-8, 0.0, 1.0, 1)),
    (optim.average_step, (f32(9), f32(9), 0.99)),
]


def widening(ir: str) -> list[str]:
    """fpext instructions outside the Python wrapper (which boxes scalars as double)."""
    out = []
    for fn in re.split(r"\ndefine ", ir):
        name = fn.split("(", 1)[0]
        if "cpython" in name or "cfunc" in name:
            continue
        out += [ln.strip() for ln in fn.splitlines() if "fpext float" in ln]
    return out


@pytest.mark.parametrize("kernel,args", CALLS, ids=[k.__name__ for k, _ in CALLS])
def test_no_float64_widening(kernel, args):
    fresh = njit(nogil=True, error_model="numpy")(kernel.py_func)  # uncached: inspectable
    fresh(*[a.copy() if isinstance(a, np.ndarray) else a for a in args])
    ir = "\n".join(fresh.inspect_llvm().values())
    assert widening(ir) == []


def test_detector_finds_widening():
    def widen(X):
        Y = np.empty_like(X)
        for i in range(X.shape[0]):
            Y[i] = np.exp(X[i] * 0.1)   # 0.1 is a float64 literal
        return Y

    f = njit(widen)
    f(np.ones(3, np.float32))
    assert widening("\n".join(f.inspect_llvm().values()))
