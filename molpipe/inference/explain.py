"""Explanations: each atom's contribution to each target's prediction of a trained model.

What is explained is ``f``: the prediction in data units (regression) or its logit
(classification, whose probability is ``sigmoid(f)``). For regression
``f = std (Z W_2 + b_2) + mean + Σ_a V[a] atom_ref``: the additive baseline's per-atom terms
``V[a] atom_ref`` are exact contributions and are always added to the atoms'. The network's
part is not additive over atoms under any aggregation this readout offers: the atoms' states
``H`` enter through the gates ``σ(H W_g ..) ⊙ tanh(H W_j ..)`` and the pooled vector ``h`` through
``relu(h W_1 + b_1)``, none of them linear. So it is split by one of two methods:

``gradient`` (default)
    gradient × input on the atom states entering the readout:
    ``c[a] = std Σ_f H[a, f] ∂Y/∂H[a, f]`` (one backward per target through the readout's
    hand-written backward, ``ReadoutStage.atom_gradient``; the atoms' input features ``X``
    the readout also reads are held fixed). A first-order estimate: ``Σ_a c[a]`` is not
    ``f`` minus any fixed reference; ``reference = f - Σ_a c[a]`` is what is left over.
    The network's part of ``c[a]`` is ``d f / d s`` at ``s = 1`` when atom ``a``'s state
    is scaled by ``s``.
``pooled``
    exact within the MLP's linear region: ``h = Σ_a T[a]`` splits exactly over atoms
    (``ReadoutStage.atom_terms``, through the gates, the attention weights and the
    aggregation's scales) and with the MLP's active units ``D = [Z > 0]`` held fixed
    ``Y = h W_1 D W_2 + (b_1 D W_2 + b_2)``, so ``c[a] = std T[a] W_1 D W_2`` and
    ``Σ_a c[a] = f - reference`` exactly, with ``reference = std (b_1 D W_2 + b_2) + mean``
    (per molecule: its own active units).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass

import numpy as np

from molpipe.inference.fingerprint import readout_input
from molpipe.inference.predict import Predictor

METHODS = ("gradient", "pooled")


@dataclass
class Explanation:
    """One molecule's explanation.

    Fields
    ------
    smiles : str the SMILES as given.
    mol : the RDKit Mol; its atom order is the rows of ``contributions``.
    targets : list[str] the model's targets, the columns below.
    value : (n_targets,) float64 the explained value ``f`` (prediction or logit).
    contributions : (n_atoms, n_targets) float64 each atom's contribution to ``f``.
    reference : (n_targets,) float64 ``value - Σ contributions`` (exact for ``pooled``).
    method : "gradient" or "pooled".
    """

    smiles: str
    mol: object
    targets: list[str]
    value: np.ndarray
    contributions: np.ndarray
    reference: np.ndarray
    method: str


def _scales(predictor: Predictor, inst) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(scale, offset, base): ``f = Y scale + offset + Σ_a base[a]``, base (n_atoms, n_targets)."""
    loss = predictor.network.stages["loss"]
    n_t = len(predictor.targets)
    if loss.task != "regression":
        return np.ones(n_t), np.zeros(n_t), np.zeros((inst.n_atoms, n_t))
    ref = loss.buffers["atom_ref"].astype(np.float64)
    base = inst.V.astype(np.float64) @ ref if ref.size else np.zeros((inst.n_atoms, n_t))
    return (loss.buffers["std"].astype(np.float64), loss.buffers["mean"].astype(np.float64),
            base)


def explain_instance(predictor: Predictor, inst, method: str = "gradient"):
    """(value (n_targets,), contributions (n_atoms, n_targets), reference) of a one-molecule
    instance (features already fitted to the model)."""
    if method not in METHODS:
        raise ValueError(f"method must be one of {', '.join(METHODS)}, got {method!r}")
    if inst.n_mols != 1:
        raise ValueError(f"explain one molecule per instance, got {inst.n_mols}")
    members = getattr(predictor, "members", None)
    if members:                     # an ensemble predicts its members' mean: so it explains
        parts = [explain_instance(m, inst, method) for m in members]
        return tuple(np.mean([p[i] for p in parts], axis=0) for i in range(3))
    network = predictor.network
    readout = network.stages["readout"]
    x = readout_input(network, inst)
    h, Z, Y = readout.vectors(x, inst)
    scale, offset, base = _scales(predictor, inst)
    n_t = len(predictor.targets)      # the means (an mve head's variances follow them)
    value = Y[0, :n_t].astype(np.float64) * scale + offset + base.sum(axis=0)
    C = np.zeros((inst.n_atoms, n_t))
    if method == "gradient":
        H = x["H"].astype(np.float64)
        for t in range(n_t):
            dY = np.zeros((1, Y.shape[1]))
            dY[0, t] = 1.0
            dH = readout.atom_gradient(x, inst, dY).astype(np.float64)
            C[:, t] = scale[t] * (H * dH).sum(axis=1)
    else:
        p = {k: v.astype(np.float64) for k, v in readout.params.items()}
        T = readout.atom_terms(x, inst).astype(np.float64)
        D = (Z[0] > 0).astype(np.float64)
        W = (p["W_1"] * D) @ p["W_2"][:, :n_t]          # (K d_h, n_targets): h -> Y
        C[:] = (T @ W) * scale
    C += base
    return value, C, value - C.sum(axis=0)


def explain(predictor: Predictor, smiles: Sequence[str],
            method: str = "gradient") -> list["Explanation | str"]:
    """An Explanation per SMILES, or the reason (a string) it cannot be explained."""
    from molpipe.chem.featurize import featurize, parse_smiles
    from molpipe.data.instance import pack

    out: list = []
    for s in smiles:
        try:
            mol = parse_smiles(s)
            g = featurize(mol, min_rounds=predictor.min_rounds, max_rounds=predictor.max_rounds)
        except Exception as err:                # every molecule is explained or gets its reason
            out.append(str(err) or type(err).__name__)
            continue
        inst = predictor.fit_features(pack([g], np.full((1, len(predictor.targets)), np.nan)))
        value, C, ref = explain_instance(predictor, inst, method)
        if not (np.isfinite(value).all() and np.isfinite(C).all()):
            out.append("prediction is not finite")
            continue
        out.append(Explanation(s, mol, list(predictor.targets), value, C, ref, method))
    return out
