"""Checkpoints: plain arrays (npz) plus JSON, written atomically, verified by checksum.

A run directory keeps its checkpoints in ``checkpoints/epoch-NNNN/`` (``arrays.npz`` and
``state.json``, which records the sha256 of ``arrays.npz``). Each is written into a
``.tmp`` directory first and renamed into place, so a kill at any moment leaves either the
previous checkpoint or the new one, never a torn one. Loading never unpickles.
"""

from __future__ import annotations

import json
import os
import shutil
import time
from pathlib import Path

import numpy as np

from molpipe.io.safenpz import NpzError, load_npz, sha256_file

KEEP = 2
MAX_STATE_BYTES = 64 << 20      # state.json: history and config, never this large
MAX_ARRAYS_BYTES = 16 << 30     # arrays.npz: parameters, best parameters, Adam slots
SLOW_ENV = "MOLPIPE_TEST_SLOW_CHECKPOINT"   # test hook: seconds to sleep mid-write


def _test_pause() -> None:
    """Sleep ``$MOLPIPE_TEST_SLOW_CHECKPOINT`` seconds (tests kill the process in this gap)."""
    seconds = os.environ.get(SLOW_ENV)
    if seconds:
        time.sleep(float(seconds))


class CheckpointError(ValueError):
    """No usable checkpoint; the message names the directory and why."""


def _fsync_dir(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def save_checkpoint(run_dir: str | Path, epoch: int, state: dict, arrays: dict[str, np.ndarray],
                    part: int | None = None) -> Path:
    """Write checkpoint ``epoch`` (JSON-able ``state`` + ``arrays``); keep the newest two.

    ``part``: a checkpoint inside epoch ``epoch + 1`` after ``part`` instances; its name
    (``epoch-NNNN-PPPPPP``) sorts after the end of epoch ``epoch`` and before the next one.
    """
    root = Path(run_dir) / "checkpoints"
    root.mkdir(parents=True, exist_ok=True)
    name = f"epoch-{epoch:04d}" + (f"-{part:06d}" if part is not None else "")
    final = root / name
    tmp = root / f"{name}.tmp"
    shutil.rmtree(tmp, ignore_errors=True)
    tmp.mkdir()
    with open(tmp / "arrays.npz", "wb") as f:
        np.savez(f, **arrays)
        f.flush()
        os.fsync(f.fileno())
    doc = {"epoch": epoch, "arrays_sha256": sha256_file(tmp / "arrays.npz"), "state": state}
    with open(tmp / "state.json", "w") as f:
        json.dump(doc, f)
        f.flush()
        os.fsync(f.fileno())
    _test_pause()
    shutil.rmtree(final, ignore_errors=True)
    os.rename(tmp, final)
    _fsync_dir(root)
    for old in checkpoints(root)[:-KEEP]:
        shutil.rmtree(old, ignore_errors=True)
    return final


def checkpoints(root: Path) -> list[Path]:
    """The finished checkpoints in ``root`` (``epoch-N`` and ``epoch-N-P``), oldest first,
    in the numbers' order (not the names': ``epoch-10000`` comes after ``epoch-9999``);
    unfinished ``.tmp`` directories are not among them."""
    found = []
    for p in root.glob("epoch-*"):
        parts = p.name.split("-")[1:]
        if p.suffix != ".tmp" and p.is_dir() and parts and all(x.isdigit() for x in parts):
            found.append((tuple(int(x) for x in parts), p))
    return [p for _, p in sorted(found)]


def _load_one(path: Path) -> tuple[dict, dict[str, np.ndarray]]:
    state_path, npz = path / "state.json", path / "arrays.npz"
    try:
        if state_path.is_symlink() or state_path.stat().st_size > MAX_STATE_BYTES:
            raise CheckpointError(f"{state_path}: a symbolic link or over {MAX_STATE_BYTES} bytes")
        doc = json.loads(state_path.read_text())
    except (OSError, ValueError) as e:
        raise CheckpointError(f"{state_path}: unreadable ({e})") from None
    if not isinstance(doc, dict) or not isinstance(doc.get("state"), dict):
        raise CheckpointError(f"{state_path}: no 'state' object")
    if not npz.exists() or npz.is_symlink() or sha256_file(npz) != doc.get("arrays_sha256"):
        raise CheckpointError(f"{npz}: missing, a symbolic link or checksum mismatch")
    try:
        arrays = load_npz(npz, MAX_ARRAYS_BYTES)     # headers checked first; never unpickles
    except NpzError as e:
        raise CheckpointError(str(e)) from None
    return doc["state"], arrays


def load_checkpoint(run_dir: str | Path) -> tuple[dict, dict[str, np.ndarray], Path]:
    """The newest valid checkpoint of ``run_dir``: (state, arrays, its directory).

    A checkpoint that fails its checksum is skipped for the one before it; unfinished
    ``.tmp`` directories are ignored.
    """
    root = Path(run_dir) / "checkpoints"
    candidates = checkpoints(root)[::-1]
    if not candidates:
        raise CheckpointError(f"{run_dir}: no checkpoint to resume from (no {root}/epoch-*)")
    errors = []
    for path in candidates:
        try:
            state, arrays = _load_one(path)
            return state, arrays, path
        except CheckpointError as e:
            errors.append(str(e))
    raise CheckpointError(f"{run_dir}: every checkpoint is damaged: " + "; ".join(errors))


def state_arrays(network, optimizers: dict, best_state: dict) -> tuple[dict, dict]:
    """Checkpoint content: arrays (parameters, best parameters, optimizer slots) + scalars."""
    arrays = {f"net/{k}": v for k, v in network.state_dict().items()}
    arrays.update({f"best/{k}": v for k, v in best_state.items()})
    scalars = {}
    for name, opt in optimizers.items():
        for k, v in opt.state_dict().items():
            if isinstance(v, np.ndarray):
                arrays[f"opt/{name}/{k}"] = v
            else:
                scalars.setdefault(name, {})[k] = v
    return arrays, scalars


def restore_state(arrays: dict, scalars: dict, network, optimizers: dict) -> dict:
    """Load a checkpoint's arrays into ``network`` and ``optimizers``; return the best state."""
    network.load_state_dict({k[4:]: v for k, v in arrays.items() if k.startswith("net/")})
    for name, opt in optimizers.items():
        prefix = f"opt/{name}/"
        opt.load_state_dict({**scalars.get(name, {}),
                             **{k[len(prefix):]: v for k, v in arrays.items() if k.startswith(prefix)}})
    return network.upgrade_state({k[5:]: v for k, v in arrays.items() if k.startswith("best/")})
