"""Readout stage: pool atoms into molecules (mean, sum, norm, attention or mean+norm), then a
two-layer MLP.

``G = σ(H W_g + b_g)``, ``J = tanh(H W_j + b_j)`` (with ``atom_features``, plus ``X U_g`` and
``X U_j``: the atoms' input features ``X`` read beside their propagated state, a skip past the
rounds), ``S[m] = Σ_{a ∈ m} α[a] G[a] ⊙ J[a]``
(``α = 1``, or learned per-atom weights that sum to one within a molecule with
``attention``), ``h[m] = [C[m, k] S[m]]_k`` with the aggregation's scales ``C``:

=============  =============================  ====================================
aggregation    channels ``C[m]``              expresses
=============  =============================  ====================================
``mean``       ``1 / n_atoms(m)``             intensive properties (per atom)
``sum``        ``1``                          extensive properties (sums over atoms)
``norm``       ``1 / 100``                    a sum on a fixed scale (chemprop's)
``attention``  ``1`` (α weighted)             a learned weighted mean
``mean+norm``  ``1 / n_atoms(m)``, ``1/100``  both: the two side by side
=============  =============================  ====================================

``Z = relu(h W_1 + b_1)``, ``Y = Z W_2 + b_2`` (standardized units). With ``dropout`` p > 0,
training forwards drop entries of ``h`` and ``Z`` (inverted dropout); the mask is drawn from
the stage's seed and the instance's key, so every schedule drops the same entries.
"""

from __future__ import annotations

import zlib

import numpy as np

from molpipe.kernels.readout import readout_bwd, readout_fwd
from molpipe.nn.init import glorot, zeros
from molpipe.runtime.stage import Arrays, Stage

AGGREGATIONS = ("mean", "sum", "norm", "attention", "mean+norm")
#: chemprop's ``norm`` aggregation: the sum over atoms divided by this
NORM = 100.0


def n_channels(aggregation: str) -> int:
    """How many scaled copies of the atom sum the aggregation puts side by side."""
    return 2 if aggregation == "mean+norm" else 1


def channel_scales(aggregation: str, atom_mol: np.ndarray, n_mols: int, dtype) -> np.ndarray:
    """C: (n_mols, n_channels) the scales of the molecule sums (see the module's table)."""
    if aggregation in ("sum", "attention"):
        return np.ones((n_mols, 1), dtype)
    if aggregation == "norm":
        return np.full((n_mols, 1), 1.0 / NORM, dtype)
    counts = np.maximum(np.bincount(atom_mol, minlength=n_mols), 1).astype(dtype)
    inv = (dtype.type(1.0) / counts).reshape(-1, 1)
    if aggregation == "mean":
        return inv
    if aggregation == "mean+norm":
        return np.ascontiguousarray(np.hstack([inv, np.full_like(inv, 1.0 / NORM)]))
    raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, got {aggregation!r}")


def dropout_mask(p: float, shape: tuple, dtype, seed: int, key, step: int) -> np.ndarray:
    """An inverted-dropout mask (0 or 1 / (1 - p)) drawn from (seed, key, step) alone."""
    k = zlib.crc32(repr(key).encode())
    keep = np.random.default_rng((seed, k, step)).random(shape) >= p
    return (keep / (1.0 - p)).astype(dtype)


class ReadoutStage(Stage):
    """Atoms -> molecule vector -> prediction Y: (n_mols, n_targets)."""

    name = "readout"
    aggregation = "mean"
    dropout = 0.0
    seed = 0

    @classmethod
    def create(cls, rng: np.random.Generator, d_h: int, d_ffn: int, n_targets: int,
               dtype, aggregation: str = "mean", dropout: float = 0.0,
               seed: int = 0, d_v: int = 0) -> "ReadoutStage":
        """``d_v`` > 0: the readout also reads the atoms' ``d_v`` input features."""
        if aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, "
                             f"got {aggregation!r}")
        k = n_channels(aggregation)
        params = {"W_g": glorot(rng, d_h, d_h, dtype=dtype), "b_g": zeros(d_h, dtype),
                  "W_j": glorot(rng, d_h, d_h, dtype=dtype), "b_j": zeros(d_h, dtype),
                  "W_1": glorot(rng, k * d_h, d_ffn, dtype=dtype), "b_1": zeros(d_ffn, dtype),
                  "W_2": glorot(rng, d_ffn, n_targets, dtype=dtype),
                  "b_2": zeros(n_targets, dtype)}
        if aggregation == "attention":
            params["w_a"] = glorot(rng, d_h, 1, dtype=dtype)
        if d_v:
            params["U_g"] = glorot(rng, d_v, d_h, dtype=dtype)
            params["U_j"] = glorot(rng, d_v, d_h, dtype=dtype)
        stage = cls(params)
        stage.aggregation, stage.dropout, stage.seed = aggregation, float(dropout), int(seed)
        dt = np.dtype(dtype)
        stage._none = np.zeros((0, 0), dt)                  # no mask / no attention
        stage._no_attention = np.zeros((0, 1), dt)
        stage._no_skip = np.zeros((0, d_h), dt)
        return stage

    def _attention(self, params: Arrays) -> np.ndarray:
        return params.get("w_a", self._no_attention)

    def _skip(self, params: Arrays) -> tuple[np.ndarray, np.ndarray]:
        return params.get("U_g", self._no_skip), params.get("U_j", self._no_skip)

    def _features(self, inst, dtype) -> np.ndarray:
        """The atoms' input features the readout reads (zero-size without the skip)."""
        if "U_g" not in self.params:
            return self._none
        d_v = self.params["U_g"].shape[0]
        return np.ascontiguousarray(inst.V[:, :d_v], dtype=dtype)

    def _masks(self, key, step: int, n_mols: int, train: bool):
        if not (train and self.dropout > 0):
            return self._none, self._none
        p, dtype = self.dropout, self.params["W_1"].dtype
        shape_h = (n_mols, self.params["W_1"].shape[0])
        shape_z = (n_mols, self.params["W_1"].shape[1])
        return (dropout_mask(p, shape_h, dtype, self.seed, key, 2 * step),
                dropout_mask(p, shape_z, dtype, self.seed, key, 2 * step + 1))

    def _fwd(self, H: np.ndarray, inst, M_h: np.ndarray, M_z: np.ndarray):
        """The non-finite count, Y and what the backward needs (``readout_fwd``'s saved arrays)."""
        p = self.params
        C = channel_scales(self.aggregation, inst.atom_mol, inst.n_mols, H.dtype)
        X = self._features(inst, H.dtype)
        U_g, U_j = self._skip(p)
        n, Y, *saved = readout_fwd(
            H, X, p["W_g"], U_g, p["b_g"], p["W_j"], U_j, p["b_j"], self._attention(p),
            p["W_1"], p["b_1"], p["W_2"], p["b_2"], inst.atom_mol, inst.n_mols, C, M_h, M_z)
        return n, Y, (H, X, C, M_h, M_z, *saved)

    def _bwd(self, dY: np.ndarray, saved: tuple, inst, g: Arrays):
        """The non-finite count and dH; adds the parameter gradients to ``g``."""
        H, X, C, M_h, M_z, G, J, alpha, h, Z, Zm = saved
        p = self.params
        g_U_g, g_U_j = self._skip(g)
        return readout_bwd(dY, H, X, G, J, alpha, h, Z, Zm, p["W_g"], p["W_j"],
                           self._attention(p), p["W_1"], p["W_2"], g["W_g"], g_U_g, g["b_g"],
                           g["W_j"], g_U_j, g["b_j"], self._attention(g), g["W_1"], g["b_1"],
                           g["W_2"], g["b_2"], inst.atom_mol, C, M_h, M_z)

    def forward(self, key, step: int, x: Arrays, inst, train: bool) -> Arrays:
        M_h, M_z = self._masks(key, step, inst.n_mols, train)
        self.nonfinite, Y, saved = self._fwd(x["H"], inst, M_h, M_z)
        if train:
            self.save(key, step, saved)
        return {"Y": Y}

    def backward(self, key, step: int, dy: Arrays, inst) -> Arrays:
        self.nonfinite, dH = self._bwd(dy["Y"], self.pop(key, step), inst, self.grads)
        return {"H": dH}

    # -- what the toolkit reads (inference: no dropout, nothing cached) -----------------
    def vectors(self, x: Arrays, inst) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
        """The molecule vectors ``h``: (n_mols, K d_h) the MLP reads (the atoms' gated sum
        ``S`` through the aggregation's scales, ``[C[m, k] S[m]]_k``), the MLP's hidden layer
        ``Z = relu(h W_1 + b_1)``: (n_mols, d_ffn) and ``Y``: (n_mols, n_targets)."""
        _, Y, saved = self._fwd(x["H"], inst, self._none, self._none)
        return saved[8], saved[9], Y

    def atom_terms(self, x: Arrays, inst) -> np.ndarray:
        """T: (n_atoms, K d_h) each atom's share of its molecule's ``h``,
        ``T[a] = [C[m, k] α[a] G[a] ⊙ J[a]]_k``, so that ``Σ_{a ∈ m} T[a] = h[m]``."""
        _, _, (H, X, C, _, _, G, J, alpha, *_) = self._fwd(x["H"], inst, self._none, self._none)
        GJ = alpha[:, None] * G * J
        Ca = C[inst.atom_mol]
        return np.hstack([Ca[:, k:k + 1] * GJ for k in range(C.shape[1])])

    def atom_gradient(self, x: Arrays, inst, dY: np.ndarray) -> np.ndarray:
        """dH: (n_atoms, d_h) the gradient of ``Σ dY ⊙ Y`` w.r.t. the atom states ``x["H"]``
        (dY: (n_mols, n_targets)); the stage's own ``grads`` are left untouched."""
        _, _, saved = self._fwd(x["H"], inst, self._none, self._none)
        scratch = {k: np.zeros_like(v) for k, v in self.params.items()}
        _, dH = self._bwd(np.ascontiguousarray(dY, dtype=x["H"].dtype), saved, inst, scratch)
        return dH
