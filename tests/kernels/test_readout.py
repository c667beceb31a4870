"""The readout kernel pair: finite differences for H and every parameter, mean and sum."""

import numpy as np
import pytest

from molpipe.kernels.readout import readout_bwd, readout_fwd

from .fd import check

PARAMS = ("W_g", "b_g", "W_j", "b_j", "W_1", "b_1", "W_2", "b_2")


@pytest.mark.parametrize("mean", [True, False])
@pytest.mark.parametrize("wrt", ("H",) + PARAMS)
def test_readout_bwd_finite_differences(wrt, mean):
    rng = np.random.default_rng(6)
    d_h, d_ffn, n_targets = 3, 4, 2
    atom_mol = np.array([0, 0, 0, 1, 2, 2], np.int32)      # molecules of 3, 1 and 2 atoms
    shapes = {"H": (6, d_h), "W_g": (d_h, d_h), "b_g": (d_h,), "W_j": (d_h, d_h), "b_j": (d_h,),
              "W_1": (d_h, d_ffn), "b_1": (d_ffn,), "W_2": (d_ffn, n_targets), "b_2": (n_targets,)}
    a = {k: rng.normal(size=s) for k, s in shapes.items()}
    a["b_1"] += 1.0                                       # most relu units active

    def f():
        return readout_fwd(a["H"], *(a[k] for k in PARAMS), atom_mol, 3, mean)[1]

    n, Y, G, J, h_mol, Z = readout_fwd(a["H"], *(a[k] for k in PARAMS), atom_mol, 3, mean)
    assert n == 0
    w = rng.normal(size=Y.shape)
    g = {k: np.zeros_like(a[k]) for k in PARAMS}
    n, dH = readout_bwd(w, a["H"], G, J, h_mol, Z, a["W_g"], a["W_j"], a["W_1"], a["W_2"],
                        *(g[k] for k in PARAMS), atom_mol, mean)
    assert n == 0
    check(f, a[wrt], {"H": dH, **g}[wrt], w)


def test_mean_divides_each_molecule_by_its_atom_count():
    rng = np.random.default_rng(7)
    atom_mol = np.array([0, 0, 0, 1, 2, 2], np.int32)
    args = [rng.normal(size=(6, 3))] + [rng.normal(size=s) for s in
                                        [(3, 3), 3, (3, 3), 3, (3, 4), 4, (4, 1), 1]]
    h_mean = readout_fwd(*args, atom_mol, 3, True)[4]
    h_sum = readout_fwd(*args, atom_mol, 3, False)[4]
    np.testing.assert_allclose(h_mean * np.array([[3.0], [1.0], [2.0]]), h_sum, rtol=1e-12)


def test_counts_the_nonfinite_values_made_and_gathered():
    rng = np.random.default_rng(11)
    atom_mol = np.array([0, 0, 1], np.int32)
    params = [rng.normal(size=s) for s in [(2, 2), 2, (2, 2), 2, (2, 3), 3, (3, 1), 1]]
    H = rng.normal(size=(3, 2))
    H[2, 0] = np.inf                                   # molecule 1's only atom
    n, Y, G, J, h_mol, Z = readout_fwd(H, *params, atom_mol, 2, True)
    assert n == np.count_nonzero(~np.isfinite(Y))
    g = [np.zeros_like(p) for p in params]
    n, dH = readout_bwd(np.ones_like(Y), H, G, J, h_mol, Z, params[0], params[2], params[4],
                        params[6], *g, atom_mol, True)
    assert n == sum(np.count_nonzero(~np.isfinite(x)) for x in (dH, *g)) > 0
