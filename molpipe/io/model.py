"""Model directories: parameters as npz plus config.json — never pickle, trust nothing.

A model directory holds ``config.json`` (validated against a schema: types, ranges, no
unknown fields) and ``params.npz`` (checked by sha256, then its headers — names, dtypes,
shapes — against the network the config describes, before any array is read). Either
file being a symbolic link, over its size limit, truncated or altered is a ModelError
naming the file and the reason. ``save_model`` replaces a whole directory by renames, so
a kill leaves the old model, the new one, or (between two renames) none — never a mix.
"""

from __future__ import annotations

import json
import os
import re
import shutil
from pathlib import Path

import numpy as np

from molpipe.nn.layout import is_old_layout
from molpipe.nn.loss import LOSSES
from molpipe.nn.network import DTYPES, PROPAGATE, NetworkConfig, build_network
from molpipe.nn.readout import AGGREGATIONS
from molpipe.io.safenpz import NpzError, inspect_npz, regular_file, sha256_file

MODEL_FORMAT = 1
PARAMS = "params.npz"
MAX_CONFIG_BYTES = 1 << 20
MAX_PARAMS_BYTES = 8 << 30
SLOW_ENV = "MOLPIPE_TEST_SLOW_MODEL"     # test hook: seconds to sleep between the renames

# config.json schema: field -> (types, check); bool is refused where an int is expected


def _int_in(lo: int, hi: int):
    return lambda v: (type(v) is int and lo <= v <= hi) or f"an integer in {lo}..{hi}"


def _one_of(options):
    return lambda v: v in options or f"one of {list(options)}"


def _opt(check):
    return lambda v: v is None or check(v)


def _targets(v):
    ok = (isinstance(v, list) and 1 <= len(v) <= 1024 and len(set(map(str, v))) == len(v)
          and all(isinstance(t, str) and 0 < len(t) <= 256 for t in v))
    return ok or "a list of 1..1024 distinct non-empty strings"


def _params_name(v):
    ok = isinstance(v, str) and re.fullmatch(r"[A-Za-z0-9_][A-Za-z0-9_.-]{0,99}\.npz", v) is not None
    return ok or "a plain file name ending in .npz (no directories)"


CONFIG_SCHEMA = {
    "format": _one_of((MODEL_FORMAT,)),
    "network": lambda v: isinstance(v, dict) or "an object",
    "params_sha256": lambda v: (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
                               or "64 hex digits",
    "atom_dim": _int_in(1, 4096),
    "bond_dim": _int_in(1, 4096),
    "targets": _targets,
    "task": _one_of(("regression", "classification")),
}
CONFIG_OPTIONAL = {
    "params": _params_name,
    "featurizer_version": lambda v: v is None or (type(v) in (int, str)) or "an int or string",
    "min_rounds": _opt(_int_in(0, 64)),
    "max_rounds": _opt(_int_in(0, 64)),
    "domain": _params_name,
    "domain_sha256": lambda v: (isinstance(v, str) and re.fullmatch(r"[0-9a-f]{64}", v) is not None)
                               or "64 hex digits",
    "std_scale": lambda v: (isinstance(v, list) and 1 <= len(v) <= 1024 and all(
        type(x) in (int, float) and 0 < x < 1e6 for x in v)) or "a list of positive numbers",
}
NETWORK_SCHEMA = {
    "hidden": _int_in(1, 4096),
    "ffn": _opt(_int_in(1, 4096)),
    "rings": lambda v: isinstance(v, bool) or "true or false",
    "task": _one_of(("regression", "classification")),
    "dtype": _one_of(DTYPES),
    "propagate": _one_of(PROPAGATE),
    "aggregation": _one_of(AGGREGATIONS),
    "dropout": lambda v: (type(v) in (int, float) and 0 <= v < 1) or "a number in [0, 1)",
    "readout_features": lambda v: isinstance(v, bool) or "true or false",
    "loss": _one_of(LOSSES),
    "seed": _int_in(0, 2**63 - 1),
}


class ModelError(ValueError):
    """A model directory that cannot be loaded; the message says which file and why."""


def _fsync_write(path: Path, data: bytes) -> None:
    with open(path, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())


def save_model(model_dir: str | Path, network_config, state: dict[str, np.ndarray], meta: dict,
               domain: dict[str, np.ndarray] | None = None) -> Path:
    """Write ``params.npz`` (``state``) and ``config.json`` (network config, dims, targets, checksum),
    and ``domain.npz`` (the training set's applicability domain, ``molpipe.chem.domain``) if given.

    The directory is built beside ``model_dir`` and renamed into place.
    """
    model_dir = Path(model_dir)
    tmp = model_dir.with_name(model_dir.name + ".tmp")
    old = model_dir.with_name(model_dir.name + ".old")
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir(parents=True)
    with open(tmp / PARAMS, "wb") as f:
        np.savez(f, **state)
        f.flush()
        os.fsync(f.fileno())
    config = {
        "format": MODEL_FORMAT,
        "network": network_config.to_dict(),
        "params": PARAMS,
        "params_sha256": sha256_file(tmp / PARAMS),
        **meta,
    }
    if domain is not None:
        from molpipe.chem.domain import FILE

        with open(tmp / FILE, "wb") as f:
            np.savez(f, **domain)
            f.flush()
            os.fsync(f.fileno())
        config.update(domain=FILE, domain_sha256=sha256_file(tmp / FILE))
    _fsync_write(tmp / "config.json", json.dumps(config, indent=2).encode())
    shutil.rmtree(old, ignore_errors=True)
    if model_dir.exists():
        os.rename(model_dir, old)
        seconds = os.environ.get(SLOW_ENV)
        if seconds:
            import time
            time.sleep(float(seconds))
    os.rename(tmp, model_dir)
    shutil.rmtree(old, ignore_errors=True)
    return model_dir


def _check(doc: dict, required: dict, optional: dict, path: Path, where: str) -> None:
    unknown = sorted(set(doc) - set(required) - set(optional))
    if unknown:
        raise ModelError(f"{path}: unknown field(s) {unknown}{where}")
    for name, check in {**required, **optional}.items():
        if name not in doc:
            if name in required:
                raise ModelError(f"{path}: field {name!r} missing{where}")
            continue
        verdict = check(doc[name])
        if verdict is not True:
            raise ModelError(f"{path}: field {name!r}{where} must be {verdict}, "
                             f"got {str(doc[name])[:80]!r}")


def read_model_config(model_dir: str | Path) -> dict:
    """The validated ``config.json`` of a model directory (or of a run directory's model/)."""
    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").exists():
        model_dir = model_dir / "model"
    path = model_dir / "config.json"
    if not path.exists() and not path.is_symlink():
        raise ModelError(f"{model_dir}: not a molpipe model (no config.json); "
                         "pass a run directory written by `molpipe train`")
    try:
        regular_file(path, MAX_CONFIG_BYTES)
        config = json.loads(path.read_text())
    except NpzError as e:
        raise ModelError(str(e)) from None
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    except (OSError, RecursionError) as e:
        raise ModelError(f"{path}: unreadable ({e})") from None
    if not isinstance(config, dict):
        raise ModelError(f"{path}: not a JSON object")
    _check(config, CONFIG_SCHEMA, CONFIG_OPTIONAL, path, "")
    _check(config["network"], {"hidden": NETWORK_SCHEMA["hidden"]},
           {k: v for k, v in NETWORK_SCHEMA.items() if k != "hidden"}, path, " of 'network'")
    if config["network"].get("task", config["task"]) != config["task"]:
        raise ModelError(f"{path}: network task {config['network']['task']!r} differs from "
                         f"task {config['task']!r}")
    config["_dir"] = str(model_dir)
    return config


def load_model(model_dir: str | Path):
    """Rebuild the network of a model directory; returns ``(network, config)``.

    Nothing is unpickled and nothing is allocated from a declared size before the file's
    checksum and every array header (name, dtype, shape) match what ``config.json`` implies
    (W_m may also have its old (d_h, n_types d_h) layout: ``Network.load_state_dict`` converts it).
    """
    config = read_model_config(model_dir)
    model_dir = Path(config["_dir"])
    params = model_dir / config.get("params", PARAMS)
    try:
        regular_file(params, MAX_PARAMS_BYTES)
    except NpzError as e:
        raise ModelError(str(e)) from None
    if params.resolve().parent != model_dir.resolve():
        raise ModelError(f"{params}: outside the model directory")
    if sha256_file(params) != config["params_sha256"]:
        raise ModelError(f"{params}: checksum does not match config.json (corrupt or altered)")
    try:
        header = inspect_npz(params, MAX_PARAMS_BYTES)
    except NpzError as e:
        raise ModelError(str(e)) from None
    try:
        net_config = NetworkConfig.from_dict(config["network"])
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{model_dir / 'config.json'}: bad network config ({e})") from None
    n_targets = len(config["targets"])
    network = build_network(net_config, config["atom_dim"], config["bond_dim"], n_targets,
                            np.zeros(n_targets), np.ones(n_targets), 0)
    want = {k: (v.shape, v.dtype) for k, v in network.state_dict().items()}
    missing, extra = sorted(set(want) - set(header)), sorted(set(header) - set(want))
    missing = [k for k in missing if k != "loss.atom_ref"]  # before the baseline: none
    if missing or extra:
        raise ModelError(f"{params}: arrays do not match config.json: missing {missing[:5]}, "
                         f"unexpected {extra[:5]}")
    for k, (shape, dtype) in header.items():
        if (shape != want[k][0] and not is_old_layout(k, shape, want[k][0])) or dtype.kind != "f":
            raise ModelError(f"{params}: array {k!r} is {dtype}{list(shape)}, the network "
                             f"needs {want[k][1]}{list(want[k][0])}")
    try:
        with np.load(params, allow_pickle=False) as z:
            state = {k: z[k] for k in z.files}
    except (ValueError, OSError, EOFError) as e:
        raise ModelError(f"{params}: unreadable ({e})") from None
    for k, v in state.items():
        if not np.isfinite(v).all():
            raise ModelError(f"{params}: array {k!r} holds NaN or inf")
    try:
        network.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise ModelError(f"{params}: {e}") from None
    return network, config


def load_domain(config: dict):
    """The ``Domain`` of a loaded model's config, or None for a model saved without one
    (before molpipe kept it); ModelError if its file is missing, altered or malformed."""
    from molpipe.chem.domain import Domain

    if "domain" not in config:
        return None
    path = Path(config["_dir"]) / config["domain"]
    if "domain_sha256" not in config:
        raise ModelError(f"{Path(config['_dir']) / 'config.json'}: 'domain' without 'domain_sha256'")
    try:
        regular_file(path, MAX_PARAMS_BYTES)
    except NpzError as e:
        raise ModelError(str(e)) from None
    if sha256_file(path) != config["domain_sha256"]:
        raise ModelError(f"{path}: checksum does not match config.json (corrupt or altered)")
    try:
        return Domain.load(path)
    except (NpzError, ValueError) as e:
        raise ModelError(str(e)) from None
