"""The network: its stages in order, the control flow as a pure function, and whole-path helpers."""

from __future__ import annotations

from dataclasses import asdict, dataclass, fields

import numpy as np

from molpipe.nn.bond import BondEmbedStage, BondMessageStage, BondUpdateStage
from molpipe.nn.embed import EmbedStage
from molpipe.nn.layout import from_old_layout
from molpipe.nn.loss import LOSSES, TASKS, LossStage, outputs_per_target
from molpipe.nn.propagate import MessageStage, PropagateStage, UpdateStage
from molpipe.nn.readout import AGGREGATIONS, ReadoutStage
from molpipe.nn.rings import RingStage
from molpipe.runtime.stage import Stage

DTYPES = ("float32", "float64")
#: a round as two stages over atoms (message, update), as one (fused), or two over directed
#: bonds (bond: D-MPNN style messages, molpipe.nn.bond)
PROPAGATE = ("split", "fused", "bond")
#: every stage a network can have, in path order, and its relative cost per instance (message
#: and update run once per round, propagate is both): the one list of stages that placement,
#: the MPI backend and the simulator read
STAGE_COSTS = {"embed": 1.0, "message": 3.0, "update": 3.0, "propagate": 6.0, "rings": 1.0,
               "readout": 1.0, "loss": 0.2}
STAGES = tuple(STAGE_COSTS)
#: what a model directory written before a field existed meant by leaving it out
LEGACY = {"aggregation": "mean", "dropout": 0.0, "readout_features": False, "loss": "mse"}


@dataclass
class NetworkConfig:
    """Architecture and initialization of the network (JSON-able)."""

    hidden: int = 128                 # d_h
    ffn: int | None = None            # d_ffn; None means ``hidden``
    rings: bool = True                # ring stage on/off
    task: str = "regression"          # "regression" | "classification"
    dtype: str = "float32"            # "float32" | "float64"
    propagate: str = "split"          # PROPAGATE: atom rounds as two stages or one, bond rounds
    aggregation: str = "mean+norm"    # readout over a molecule's atoms (AGGREGATIONS)
    dropout: float = 0.0              # readout MLP dropout (training only)
    readout_features: bool = True     # the readout also reads the atoms' input features
    loss: str = "mse"                 # regression: "mse" | "mve" (mean and variance, Gaussian NLL)
    seed: int = 0                     # initialization seed

    def __post_init__(self):
        if self.ffn is None:
            self.ffn = self.hidden
        if self.task not in TASKS:
            raise ValueError(f"task must be one of {TASKS}, got {self.task!r}")
        if self.dtype not in DTYPES:
            raise ValueError(f"dtype must be one of {DTYPES}, got {self.dtype!r}")
        if self.propagate not in PROPAGATE:
            raise ValueError(f"propagate must be one of {PROPAGATE}, got {self.propagate!r}")
        if self.aggregation not in AGGREGATIONS:
            raise ValueError(f"aggregation must be one of {', '.join(AGGREGATIONS)}, "
                             f"got {self.aggregation!r}")
        if self.loss not in LOSSES:
            raise ValueError(f"loss must be one of {', '.join(LOSSES)}, got {self.loss!r}")
        if self.loss == "mve" and self.task != "regression":
            raise ValueError(f"loss 'mve' (a mean and a variance per target) is for "
                             f"regression, not {self.task}")
        if not 0.0 <= self.dropout < 1.0:
            raise ValueError(f"dropout must be in [0, 1), got {self.dropout!r}")
        if self.hidden < 1 or self.ffn < 1:
            raise ValueError("hidden and ffn must be positive")

    def to_dict(self) -> dict:
        return asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "NetworkConfig":
        names = {f.name for f in fields(cls)}
        unknown = set(d) - names
        if unknown:
            raise ValueError(f"unknown NetworkConfig fields: {sorted(unknown)}")
        return cls(**{**LEGACY, **d})


class Network:
    """Stages keyed by name (in path order) plus the route every instance follows."""

    first = "embed"

    def __init__(self, config: NetworkConfig, stages: dict[str, Stage]):
        self.config = config
        self.stages = stages

    # -- control flow -------------------------------------------------------------------
    def route(self, stage_name: str, step: int, inst) -> tuple[str, int] | None:
        """Where an instance goes after ``(stage_name, step)``; None after the loss."""
        split = "message" in self.stages
        if stage_name == "embed":
            return ("message", 0) if split else ("propagate", 0)
        if stage_name == "message":
            return ("update", step)
        if stage_name in ("propagate", "update"):
            if step + 1 < inst.n_rounds:
                return ("message" if split else "propagate", step + 1)
            if inst.has_rings and "rings" in self.stages:
                return ("rings", 0)
            return ("readout", 0)
        if stage_name == "rings":
            return ("readout", 0)
        if stage_name == "readout":
            return ("loss", 0)
        if stage_name == "loss":
            return None
        raise KeyError(f"unknown stage {stage_name!r}")

    def path(self, inst) -> list[tuple[str, int]]:
        """The whole forward path of ``inst``: [(stage, step), ...]."""
        out = [(self.first, 0)]
        nxt = self.route(self.first, 0, inst)
        while nxt is not None:
            out.append(nxt)
            nxt = self.route(*nxt, inst)
        return out

    # -- sequential execution ------------------------------------------------------------
    def _forward(self, key, inst, train: bool):
        x: dict = {}
        for name, step in self.path(inst):
            x = self.stages[name].forward(key, step, x, inst, train)
        return x

    def forward_backward(self, key, inst) -> tuple[float, np.ndarray]:
        """Forward the whole path (caching), then backward in reverse; adds to every stage's grads."""
        path = self.path(inst)
        out = self._forward(key, inst, train=True)
        dy: dict = {}
        for name, step in reversed(path):
            dy = self.stages[name].backward(key, step, dy, inst)
        return float(out["loss"][0]), out["pred"]

    def predict(self, inst) -> np.ndarray:
        """Predictions (n_mols, n_targets) in data units; caches nothing."""
        return self._forward(None, inst, train=False)["pred"]

    def predict_with_std(self, inst) -> tuple[np.ndarray, np.ndarray | None]:
        """Predictions and, for a mean-variance head (``loss="mve"``), their predicted SD,
        both (n_mols, n_targets) in data units; the SD is None for any other network."""
        out = self._forward(None, inst, train=False)
        return out["pred"], out.get("std")

    def loss(self, inst) -> float:
        """Loss of ``inst`` without caching (for finite differences and evaluation)."""
        return float(self._forward(None, inst, train=False)["loss"][0])

    def zero_grad(self) -> None:
        for s in self.stages.values():
            s.zero_grad()

    # -- parameters ----------------------------------------------------------------------
    def _arrays(self) -> dict[str, np.ndarray]:
        out = {}
        for sname, stage in self.stages.items():
            for pname, arr in stage.params.items():
                out[f"{sname}.{pname}"] = arr
            for bname, arr in stage.buffers.items():
                out[f"{sname}.{bname}"] = arr
        return out

    def state_dict(self) -> dict[str, np.ndarray]:
        """Copies of every parameter and buffer, keyed "stage.name" (e.g. "propagate.W_m")."""
        return {k: v.copy() for k, v in self._arrays().items()}

    def load_state_dict(self, d: dict[str, np.ndarray]) -> None:
        """Copy ``d`` into the parameters in place (optimizers keep their references).

        W_m saved in its old (d_h, n_types d_h) layout is converted (``from_old_layout``).
        """
        own = self._arrays()
        if "loss.atom_ref" not in d:           # written before the additive baseline: none
            d = {**d, "loss.atom_ref": np.zeros_like(own["loss.atom_ref"])}
        missing = sorted(set(own) - set(d))
        unknown = sorted(set(d) - set(own))
        if missing or unknown:
            raise ValueError(f"state dict mismatch: missing {missing}, unexpected {unknown}")
        d = self.upgrade_state(d)
        for k, arr in own.items():
            src = np.asarray(d[k])
            if src.shape != arr.shape:
                raise ValueError(f"{k}: shape {src.shape} in state dict, network has {arr.shape}")
        for k, arr in own.items():
            arr[...] = d[k]

    def upgrade_state(self, d: dict[str, np.ndarray]) -> dict[str, np.ndarray]:
        """``d`` with arrays saved in an older layout (W_m) in this network's; any other array
        (unknown names, other shapes) as it is."""
        own = self._arrays()
        return {k: from_old_layout(k, v, own[k].shape) if k in own else v for k, v in d.items()}

    @property
    def n_parameters(self) -> int:
        return sum(s.n_parameters for s in self.stages.values())


def build_network(config: NetworkConfig, d_v: int, d_e: int, n_targets: int,
                  target_mean=None, target_std=None, seed: int | None = None,
                  atom_ref=None) -> Network:
    """Build and initialize the network; ``seed`` overrides ``config.seed``; ``atom_ref``
    (d_v, n_targets) is the additive baseline of regression targets (LossStage; default 0)."""
    rng = np.random.default_rng(config.seed if seed is None else seed)
    dtype = np.dtype(config.dtype)
    d_h = config.hidden
    mean = np.zeros(n_targets) if target_mean is None else np.asarray(target_mean)
    std = np.ones(n_targets) if target_std is None else np.asarray(target_std)
    if mean.size != n_targets or std.size != n_targets:
        raise ValueError(f"target mean/std must have {n_targets} entries")
    stages: dict[str, Stage] = {}
    if config.propagate == "bond":
        stages["embed"] = BondEmbedStage.create(rng, d_v, d_e, d_h, dtype)
        stages["message"] = BondMessageStage.create(rng, d_h, dtype)
        stages["update"] = BondUpdateStage.create(rng, d_v, d_h, dtype)
    else:
        stages["embed"] = EmbedStage.create(rng, d_v, d_e, d_h, dtype)
    if config.propagate == "split":
        stages["message"] = MessageStage.create(rng, d_h, dtype)
        stages["update"] = UpdateStage.create(rng, d_h, dtype)
    elif config.propagate == "fused":
        stages["propagate"] = PropagateStage.create(rng, d_h, dtype)
    if config.rings:
        stages["rings"] = RingStage.create(rng, d_h, dtype)
    n_out = outputs_per_target(config.loss) * n_targets       # mve: [mean | raw variance]
    stages["readout"] = ReadoutStage.create(rng, d_h, config.ffn, n_out, dtype,
                                            config.aggregation, config.dropout,
                                            config.seed if seed is None else seed,
                                            d_v if config.readout_features else 0)
    stages["loss"] = LossStage(mean, std, config.task, dtype, atom_ref, d_v, config.loss)
    return Network(config, stages)
