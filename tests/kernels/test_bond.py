"""Directed-bond kernels: numpy references for the forwards, finite differences for the backwards."""

import numpy as np
import pytest

from molpipe.kernels.bond import (atomize_bwd, atomize_fwd, bond_init_bwd, bond_init_fwd,
                                  bond_message_bwd, bond_message_fwd, bond_update_bwd,
                                  bond_update_fwd, reverse_edges)

from .fd import check

# 5 atoms: a ring 0-1-2-3 with 1-3 across, atom 4 alone; both directions, shuffled
BONDS = [(0, 1), (1, 2), (2, 3), (3, 0), (1, 3)]
_pairs = [(a, b) for a, b in BONDS] + [(b, a) for a, b in BONDS]
_order = np.random.default_rng(0).permutation(len(_pairs))
SRC = np.array([_pairs[i][0] for i in _order], np.int32)
DST = np.array([_pairs[i][1] for i in _order], np.int32)
N_ATOMS, N_E = 5, len(SRC)
REV = reverse_edges(SRC, DST, N_ATOMS)


def test_reverse_edges():
    for e in range(N_E):
        assert (SRC[REV[e]], DST[REV[e]]) == (DST[e], SRC[e])
    one_way = reverse_edges(np.array([0, 1], np.int32), np.array([1, 2], np.int32), 3)
    assert one_way.tolist() == [-1, -1]


def _messages_numpy(H):
    M = np.zeros_like(H)
    for e in range(N_E):
        M[e] = sum(H[k] for k in range(N_E) if DST[k] == SRC[e] and k != REV[e])
    return M


@pytest.mark.parametrize("seed", [0, 1])
def test_init(seed):
    rng = np.random.default_rng(seed)
    X, E = rng.normal(size=(N_ATOMS, 3)), rng.normal(size=(N_E, 2))
    W, b = rng.normal(size=(5, 4)), rng.normal(size=4)
    n, H, P0, XE = bond_init_fwd(X, E, SRC, W, b)
    np.testing.assert_allclose(P0, np.hstack([X[SRC], E]) @ W + b, rtol=1e-12)
    np.testing.assert_allclose(H, np.maximum(P0, 0))
    w, w0 = rng.normal(size=H.shape), rng.normal(size=P0.shape)
    gW, gb = np.zeros_like(W), np.zeros_like(b)
    assert bond_init_bwd(w, w0, H, XE, gW, gb) == 0

    def f():
        _, H, P0, _ = bond_init_fwd(X, E, SRC, W, b)
        return np.concatenate([(w * H).ravel(), (w0 * P0).ravel()])
    for x, g in ((W, gW), (b, gb)):
        check(f, x, g, np.ones(2 * H.size))


@pytest.mark.parametrize("seed", [0, 1])
def test_message(seed):
    rng = np.random.default_rng(seed)
    H, W = rng.normal(size=(N_E, 4)), rng.normal(size=(4, 2))
    n, M, Z1 = bond_message_fwd(H, W, SRC, DST, REV, N_ATOMS)
    np.testing.assert_allclose(M, _messages_numpy(H), rtol=1e-12, atol=1e-12)
    np.testing.assert_allclose(Z1, M @ W, rtol=1e-12)
    wz, wm, wh = rng.normal(size=Z1.shape), rng.normal(size=M.shape), rng.normal(size=H.shape)
    gW = np.zeros_like(W)
    n, dH = bond_message_bwd(wz, wm, wh, M, W, gW, SRC, DST, REV, N_ATOMS)
    assert n == 0

    def f():
        _, M, Z1 = bond_message_fwd(H, W, SRC, DST, REV, N_ATOMS)
        return np.concatenate([(wz * Z1).ravel(), (wm * M).ravel(), (wh * H).ravel()])
    for x, g in ((H, dH), (W, gW)):
        check(f, x, g, np.ones(Z1.size + M.size + H.size))


@pytest.mark.parametrize("step", [0, 1])
def test_update(step):
    rng = np.random.default_rng(step + 5)
    d, d1 = 4, 2
    H, P0, M = rng.normal(size=(N_E, d)), rng.normal(size=(N_E, d)), rng.normal(size=(N_E, d))
    Z1, W = rng.normal(size=(N_E, d1)), rng.normal(size=(d, d - d1))
    rounds = np.where(np.arange(N_E) % 3 == 0, 1, 2).astype(np.int32)   # some bonds stop at 1
    n, out = bond_update_fwd(H, P0, M, Z1, W, rounds, step)
    new = np.maximum(P0 + np.hstack([Z1, M @ W]), 0)
    np.testing.assert_allclose(out, np.where((rounds > step)[:, None], new, H), rtol=1e-12)
    w, w0 = rng.normal(size=out.shape), rng.normal(size=P0.shape)
    gW = np.zeros_like(W)
    n, dH, dP0, dZ1, dM = bond_update_bwd(w, w0, out, M, W, gW, rounds, step, d1)
    assert n == 0

    def f():
        return bond_update_fwd(H, P0, M, Z1, W, rounds, step)[1]
    for x, g in ((H, dH), (Z1, dZ1), (M, dM), (W, gW)):
        if np.linalg.norm(g) == 0:                        # H: every bond runs at step 0
            assert step == 0 and x is H
            continue
        check(f, x, g, w)
    # dP0 is the gradient of the pre-activation plus the incoming rounds' dP0
    check(f, P0, dP0 - w0, w)


def test_atomize():
    rng = np.random.default_rng(9)
    H, X = rng.normal(size=(N_E, 4)), rng.normal(size=(N_ATOMS, 3))
    W, b = rng.normal(size=(7, 4)), rng.normal(size=4) + 0.5
    n, A, XM = atomize_fwd(H, X, DST, W, b)
    Ma = np.stack([H[DST == a].sum(axis=0) if (DST == a).any() else np.zeros(4)
                   for a in range(N_ATOMS)])
    np.testing.assert_allclose(A, np.maximum(np.hstack([X, Ma]) @ W + b, 0), rtol=1e-12)
    assert (XM[4, 3:] == 0).all()                         # the lone atom gets no message
    w = rng.normal(size=A.shape)
    gW, gb = np.zeros_like(W), np.zeros_like(b)
    n, dH = atomize_bwd(w, A, XM, W, gW, gb, DST, 3)
    assert n == 0
    for x, g in ((H, dH), (W, gW), (b, gb)):
        check(lambda: atomize_fwd(H, X, DST, W, b)[1], x, g, w)
