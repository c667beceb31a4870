"""Model directories: parameters as npz plus config.json — never pickle."""

from __future__ import annotations

import hashlib
import json
import os
from pathlib import Path

import numpy as np

from molpipe.nn.network import NetworkConfig, build_network

MODEL_FORMAT = 1


class ModelError(ValueError):
    """A model directory that cannot be loaded; the message says which file and why."""


def _sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def _atomic_write_bytes(path: Path, data: bytes) -> None:
    tmp = path.with_name(path.name + ".tmp")
    with open(tmp, "wb") as f:
        f.write(data)
        f.flush()
        os.fsync(f.fileno())
    os.replace(tmp, path)


def save_model(model_dir: str | Path, network_config, state: dict[str, np.ndarray], meta: dict) -> Path:
    """Write ``params.npz`` (``state``) and ``config.json`` (network config, dims, targets, checksum)."""
    model_dir = Path(model_dir)
    model_dir.mkdir(parents=True, exist_ok=True)
    params = model_dir / "params.npz"
    tmp = model_dir / "params.tmp.npz"
    np.savez(tmp, **state)
    os.replace(tmp, params)
    config = {
        "format": MODEL_FORMAT,
        "network": network_config.to_dict(),
        "params_sha256": _sha256(params),
        **meta,
    }
    _atomic_write_bytes(model_dir / "config.json", json.dumps(config, indent=2).encode())
    return model_dir


def read_model_config(model_dir: str | Path) -> dict:
    """The validated ``config.json`` of a model directory (or of a run directory's model/)."""
    model_dir = Path(model_dir)
    if (model_dir / "model" / "config.json").exists():
        model_dir = model_dir / "model"
    path = model_dir / "config.json"
    if not path.exists():
        raise ModelError(f"{model_dir}: not a molpipe model (no config.json); "
                         "pass a run directory written by `molpipe train`")
    try:
        config = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as e:
        raise ModelError(f"{path}: not valid JSON ({e})") from None
    required = {"format": int, "network": dict, "atom_dim": int, "bond_dim": int,
                "targets": list, "task": str, "params_sha256": str}
    for name, kind in required.items():
        if not isinstance(config.get(name), kind):
            raise ModelError(f"{path}: field {name!r} missing or not {kind.__name__}")
    if config["format"] != MODEL_FORMAT:
        raise ModelError(f"{path}: model format {config['format']} (this molpipe reads {MODEL_FORMAT})")
    config["_dir"] = str(model_dir)
    return config


def load_model(model_dir: str | Path):
    """Rebuild the network of a model directory; returns ``(network, config)``."""
    config = read_model_config(model_dir)
    model_dir = Path(config["_dir"])
    params = model_dir / "params.npz"
    if not params.exists():
        raise ModelError(f"{model_dir}: params.npz is missing")
    if _sha256(params) != config["params_sha256"]:
        raise ModelError(f"{params}: checksum does not match config.json (corrupt or altered)")
    try:
        net_config = NetworkConfig.from_dict(config["network"])
    except (TypeError, ValueError, KeyError) as e:
        raise ModelError(f"{model_dir / 'config.json'}: bad network config ({e})") from None
    n_targets = len(config["targets"])
    network = build_network(net_config, config["atom_dim"], config["bond_dim"], n_targets,
                            np.zeros(n_targets), np.ones(n_targets), 0)
    with np.load(params, allow_pickle=False) as z:
        state = {k: z[k] for k in z.files}
    try:
        network.load_state_dict(state)
    except (KeyError, ValueError) as e:
        raise ModelError(f"{params}: {e}") from None
    return network, config
