"""A run's settings: ``TrainConfig``, one frozen object checked when it is made, before any
work, and the one source of defaults (``DEFAULTS``) that ``molpipe train``, ``molpipe bench``,
``molpipe simulate`` and a settings file read.

Each rule names the setting as ``molpipe train`` spells it (``--epochs``), so that the same
message serves the command line, a settings file written by hand and the Python API.
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, fields
from pathlib import Path

from molpipe.runtime.accumulator import CRITERIA, parse_criterion
from molpipe.runtime.defaults import (EXCHANGE_EVERY, MAX_ACTIVE_KEYS, MIN_UPDATE_FREQUENCY,
                                      STALL_TIMEOUT)
from molpipe.runtime.schedule import ADMISSIONS, parse_admission

#: the splits ``--split`` names (molpipe.data.splits.SPLITS, which settings may not import)
SPLITS = ("random", "scaffold", "scaffold-balanced", "stratified", "kmeans")


class SettingsError(ValueError):
    """A setting outside its allowed values; the message names the option and the values."""


def _choice(*choices):
    return (lambda v: v in choices), "one of " + ", ".join(map(str, choices))


def _at_least(low, kind=int):
    return (lambda v: isinstance(v, kind) and not isinstance(v, bool) and v >= low), \
        f"{'an integer' if kind is int else 'a number'} of at least {low}"


def _positive_number():
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v > 0), \
        "a positive number"


def _fraction():
    return (lambda v: isinstance(v, (int, float)) and 0 <= v < 1), "a number in [0, 1)"


def _zero_or_more():
    return (lambda v: isinstance(v, (int, float)) and math.isfinite(v) and v >= 0), \
        "zero or a positive number"


def _parses(parse, allowed: str):
    """A text form that ``parse`` reads (a ValueError: not allowed)."""
    def ok(v) -> bool:
        try:
            return isinstance(v, str) and (parse(v) or True)
        except ValueError:
            return False
    return ok, allowed


def _is_file_name(v: str) -> bool:
    """A split given as a file: a .json name or any path with a directory in it."""
    return v.lower().endswith(".json") or "/" in v or "\\" in v


#: field -> (option, check, allowed); a field that is None where the rule allows it passes
RULES = {
    "split": ("--split", lambda v: isinstance(v, str) and (v in SPLITS or _is_file_name(v)),
              "one of " + ", ".join(SPLITS) + ", or a JSON file of row indices (FILE.json)"),
    "task": ("--task", *_choice(None, "regression", "classification")),
    "epochs": ("--epochs", *_at_least(1)),
    "patience": ("--patience", *_at_least(1)),
    "hidden": ("--hidden", *_at_least(1)),
    "max_rounds": ("--rounds", *_at_least(1)),
    "min_rounds": ("min_rounds", *_at_least(1)),
    "lr": ("--lr", *_positive_number()),
    "dropout": ("--dropout", *_fraction()),
    "average": ("--average", *_fraction()),
    "weight_decay": ("--weight-decay", *_zero_or_more()),
    "target_scaling": ("--target-scaling", *_choice("standard", "robust")),
    "baseline": ("--baseline", *_choice("auto", "additive", "none")),
    "loss": ("--loss", *_choice("mse", "mve")),
    "propagate": ("--propagate", *_choice("split", "bond")),
    "schedule": ("--schedule", *_choice("async", "sync", "reference")),
    "max_active_keys": ("--max-active-keys", *_at_least(1)),
    "min_update_frequency": ("--min-update-frequency", *_at_least(1)),
    "update_criterion": ("--update-criterion", *_parses(parse_criterion, CRITERIA)),
    "admission": ("--admission", *_parses(parse_admission, ADMISSIONS)),
    "weight_stashing": ("--no-weight-stashing", *_choice(True, False)),
    "weight_prediction": ("--weight-prediction", *_choice(True, False)),
    "backend": ("--backend", *_choice("thread", "mpi")),
    "layout": ("--layout", *_choice("auto", "stages", "fused", "replicas")),
    "dtype": ("dtype", *_choice("float32", "float64")),
    "stall_timeout": ("--stall-timeout", *_positive_number()),
    "on_nonfinite": ("--on-nonfinite", *_choice("stop", "skip")),
    "exchange_every": ("--exchange-every", *_at_least(1)),
    "ensemble": ("--ensemble", *_at_least(1)),
    "ensemble_jobs": ("--ensemble-jobs", *_at_least(1)),
    "recalibrate": ("--recalibrate", *_choice(True, False)),
}
OPTIONAL = {"molecules_per_instance": ("--molecules-per-instance", *_at_least(1)),
            "checkpoint_minutes": ("--checkpoint-minutes", *_positive_number()),
            "limit": ("limit", *_at_least(1)),
            "replicas": ("--replicas", *_at_least(1)),
            "val_max": ("--val-max", *_at_least(1)),
            "split_seed": ("split_seed", *_at_least(0)),
            "from_model": ("--from-model", lambda v: isinstance(v, str) and bool(v.strip()),
                           "a run or model directory"),
            "split_column": ("--split-column", lambda v: isinstance(v, str) and bool(v.strip()),
                             "the name of a column of the data file")}


def check_settings(config) -> None:
    """Raise SettingsError for the first setting of ``config`` outside its allowed values."""
    from molpipe.nn.network import STAGES
    from molpipe.nn.readout import AGGREGATIONS

    rules = {**RULES, "aggregation": ("--aggregation", *_choice(*AGGREGATIONS))}
    for field, (option, ok, allowed) in {**rules, **OPTIONAL}.items():
        value = getattr(config, field)
        if field in OPTIONAL and value is None:
            continue
        if not ok(value):
            raise SettingsError(f"{option} must be {allowed}, not {value!r}")
    if config.admission != "instances" and config.schedule == "sync":
        raise SettingsError(f"--admission {config.admission} is for --schedule async (sync "
                            "admits whole groups)")
    if config.min_rounds > config.max_rounds:
        raise SettingsError(f"--rounds (max_rounds) must be at least min_rounds "
                            f"({config.min_rounds}), not {config.max_rounds!r}")
    if ((config.layout == "replicas" or (config.replicas or 1) > 1)
            and (config.schedule == "sync" or (config.backend != "thread"
                                               and config.layout != "replicas"))):
        raise SettingsError(f"--layout replicas needs the async schedule (threads, or one "
                            f"replica per MPI rank), not --schedule {config.schedule} "
                            f"--backend {config.backend} --layout {config.layout}")
    if config.split_column is not None and config.split != "random":
        raise SettingsError(f"--split-column {config.split_column!r} gives the split; "
                            f"leave out --split {config.split!r} (or the column)")
    stages = [s for s in STAGES if s != "loss"]
    freeze = config.freeze
    if not isinstance(freeze, tuple) or not all(isinstance(v, str) for v in freeze):
        raise SettingsError(f"--freeze must be stage names, not {freeze!r}")
    for name in freeze:
        if name not in stages:
            raise SettingsError(f"--freeze: {name!r} is not a stage; the stages: "
                                f"{', '.join(stages)}")
    if freeze and config.from_model is None:
        raise SettingsError(f"--freeze {','.join(freeze)} keeps stages as they start: it "
                            "needs --from-model RUN_DIR to start them from")
    if config.recalibrate and config.ensemble == 1 and config.loss != "mve":
        raise SettingsError("--recalibrate scales a predicted σ: it needs --ensemble K "
                            "(K > 1) or --loss mve")
    if config.loss == "mve" and config.task == "classification":
        raise SettingsError("--loss mve (a mean and a variance per target) is for regression, "
                            "not --task classification")
    fractions = config.split_fractions
    if (len(fractions) != 3 or any(not 0 <= f <= 1 for f in fractions)
            or not math.isclose(sum(fractions), 1.0) or fractions[0] <= 0):
        raise SettingsError(f"split_fractions must be three fractions (train > 0) that sum to "
                            f"1, not {tuple(fractions)!r}")


@dataclass(frozen=True)
class TrainConfig:
    """Everything that decides a training run (written to report.json)."""

    data: str = "esol"
    targets: list[str] | None = None
    smiles_column: str | None = None
    task: str | None = None
    split: str = "random"
    split_fractions: tuple[float, float, float] = (0.8, 0.1, 0.1)
    split_column: str | None = None   # a data file column saying train / val / test per row
    limit: int | None = None          # use only the first N molecules of the data set
    seed: int = 0
    split_seed: int | None = None     # the split's own seed (None: ``seed``); an ensemble's
                                      # members share one split and differ in ``seed``
    epochs: int = 50
    patience: int = 20
    hidden: int = 128
    aggregation: str = "mean+norm"    # readout over atoms: mean, sum, norm, attention, mean+norm
    dropout: float = 0.0              # readout MLP dropout
    readout_features: bool = True     # the readout reads the atoms' input features too
    propagate: str = "split"          # rounds over atoms ("split": message, update stages) or
                                      # over directed bonds ("bond", D-MPNN style)
    weight_decay: float = 0.0         # L2 on every parameter (Adam)
    average: float = 0.0              # decay of each stage's parameter average (0: none); the
                                      # averages are what is evaluated and saved
    target_scaling: str = "standard"  # regression targets: "standard" (mean, SD) or "robust"
    baseline: str = "auto"            # regression: "additive" (a least-squares fit to summed
                                      # atom features the network corrects), "none", or
                                      # "auto": additive for the targets it carries >= 90 % of
    loss: str = "mse"                 # regression: "mse", or "mve" (a mean-variance head: the
                                      # Gaussian NLL of a predicted mean and variance)
    min_rounds: int = 2
    max_rounds: int = 6
    rings: bool = True
    lr: float = 1e-3
    molecules_per_instance: int | None = None   # None: auto_instance_size (atoms per instance)
    schedule: str = "async"
    max_active_keys: int = MAX_ACTIVE_KEYS        # measured: benchmarks/README.md (sweep)
    min_update_frequency: int = MIN_UPDATE_FREQUENCY
    weight_stashing: bool = True      # async: backward with the weights the forward used
    weight_prediction: bool = False   # async: forward on weights extrapolated over the updates
                                      # expected before its backward (SpecTrain); composes
                                      # with stashing (the backward then uses the same ones)
    update_criterion: str = "count"   # when a worker updates: count (min_update_frequency),
                                      # atoms:N, gradnorm:X[:MAXN] or backlog:MAXN
    admission: str = "instances"      # async: instances (max_active_keys only) or atoms:N
                                      # (also at most N atoms in flight)
    backend: str = "thread"
    placement: str | None = None      # "embed,message/update,..." (default: a worker per stage)
    layout: str = "auto"              # "stages" (a worker per stage, or --placement), "fused"
                                      # (one worker), "replicas" (fused copies, shared params),
                                      # "auto": replicas for async on threads without a
                                      # placement, else stages (measured: benchmarks/README.md)
    replicas: int | None = None       # copies of the layout's workers (replicas: default 2;
                                      # --backend mpi: one per rank, the job's size)
    exchange_every: int = EXCHANGE_EVERY  # --backend mpi --layout replicas: a stage sends its
                                      # parameter change to the other replicas every N updates
    dtype: str = "float32"
    track_test: bool = False          # also score the test split every epoch (benchmarks)
    val_max: int | None = None        # select epochs on a seeded sample of this many
                                      # validation rows (None: all of them)
    checkpoint_minutes: float | None = None  # also checkpoint within an epoch this often
    trace: bool = True                # record the last training epoch's pipeline timeline
    stall_timeout: float = STALL_TIMEOUT  # seconds without any pipeline message: stalled
    on_nonfinite: str = "stop"        # NaN/inf loss, activations or gradients: "stop" the run
                                      # or "skip" the instance (never saved into a checkpoint
                                      # or model)
    cache_root: str | None = None
    ensemble: int = 1                 # members trained (seeds seed, seed+1, ... on one split)
    ensemble_jobs: int = 2            # members trained at the same time (1: one after another)
    recalibrate: bool = False         # ensemble: scale its σ to fit the validation errors
    from_model: str | None = None     # start from this run's (or model's) parameters
    freeze: tuple[str, ...] = ()      # stages (of --from-model) whose parameters stay

    def __post_init__(self):
        check_settings(self)

    @classmethod
    def from_dict(cls, values: dict, source: str = "settings") -> "TrainConfig":
        """Settings from a mapping (a settings.json, a checkpoint's config); SettingsError
        naming ``source`` and the key for a key that is no setting."""
        if not isinstance(values, dict):
            raise SettingsError(f"{source}: settings must be a JSON object of name: value")
        known = {f.name for f in fields(cls)}
        unknown = sorted(set(values) - known)
        if unknown:
            import difflib

            close = difflib.get_close_matches(unknown[0], known, n=1)
            hint = f"did you mean {close[0]!r}?" if close else f"known: {', '.join(sorted(known))}"
            raise SettingsError(f"{source}: {unknown[0]!r} is not a setting ({hint})")
        values = dict(values)
        for key in ("split_fractions", "freeze"):
            if isinstance(values.get(key), list):
                values[key] = tuple(values[key])
        try:
            return cls(**values)
        except SettingsError as err:
            raise SettingsError(f"{source}: {err}") from None

    @classmethod
    def from_file(cls, path: str | Path) -> "TrainConfig":
        """Settings from a TOML file (``.toml``: a run's ``config.toml``) or a JSON file
        (a run's ``settings.json``)."""
        path = Path(path)
        kind = "TOML" if path.suffix.lower() == ".toml" else "JSON"
        try:
            text = path.read_text(encoding="utf-8")
            values = _read_toml(text) if kind == "TOML" else json.loads(text)
        except (OSError, UnicodeDecodeError, ValueError) as err:
            raise SettingsError(f"{path}: not a readable {kind} settings file ({err})") from None
        return cls.from_dict(values, str(path))

    def to_dict(self) -> dict:
        return asdict(self)

    def to_toml(self) -> str:
        """Every setting as TOML (``from_file`` reads it back; unset ones as comments)."""
        lines = ["# molpipe train settings: molpipe train --config config.toml reproduces",
                 "# the run; options given beside --config override these."]
        for key, value in self.to_dict().items():
            lines.append(f"# {key} =   (not set)" if value is None
                         else f"{key} = {_toml_value(value)}")
        return "\n".join(lines) + "\n"


def _toml_value(v) -> str:
    if isinstance(v, bool):
        return "true" if v else "false"
    if isinstance(v, (int, float)):
        return repr(v)
    if isinstance(v, (list, tuple)):
        return "[" + ", ".join(_toml_value(x) for x in v) + "]"
    return json.dumps(str(v))              # a JSON string is a TOML basic string


def _read_toml(text: str) -> dict:
    try:
        import tomllib
    except ImportError:                    # Python 3.10
        try:
            import tomli as tomllib
        except ImportError:
            raise ValueError("reading TOML on Python 3.10 needs tomli (pip install tomli); "
                             "or pass the run's settings.json") from None
    return tomllib.loads(text)


DEFAULTS = TrainConfig()

#: what a checkpoint written before a setting existed meant by leaving it out
LEGACY = {"aggregation": "mean", "baseline": "none"}
