"""Ensembles: ``molpipe train DATA --ensemble K`` trains K members of one run's settings on
one split (the split seed is ``seed``'s), member i initialized and ordered by seed + i, each
into ``OUT/member-i``, a complete run directory of its own.

Members are trained ``ensemble_jobs`` at a time, each its own pipeline of workers on threads
(the kernels release the GIL), so a member's stages are workers of their own and the
machine's cores stay busy while any one member's pipeline waits; ``ensemble_jobs = 1``
trains them one after another. ``benchmarks/bench_ensemble.py`` measures both.
``molpipe.inference.ensemble`` then combines the members into one model (mean and σ).
"""

from __future__ import annotations

import dataclasses
import json
import threading
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

from molpipe.training.settings import TrainConfig

MEMBER = "member-{}"


def member_configs(config: TrainConfig) -> list[TrainConfig]:
    """The members' settings: seeds seed, seed + 1, ... on the split of ``seed``."""
    split_seed = config.seed if config.split_seed is None else config.split_seed
    return [dataclasses.replace(config, seed=config.seed + i, split_seed=split_seed,
                                ensemble=1, recalibrate=False)
            for i in range(config.ensemble)]


def member_dirs(out_dir: str | Path, n: int) -> list[Path]:
    return [Path(out_dir) / MEMBER.format(i) for i in range(n)]


def train_members(config: TrainConfig, out_dir: str | Path, progress=None,
                  resume: bool = False) -> dict:
    """Train every member of ``config`` not finished yet into ``out_dir``/member-i.

    ``progress(i, event, **kw)`` hears member i's events. With ``resume`` a member that has a
    checkpoint continues from it and a finished member (its report.json) is kept. A member's
    failure stops the others from starting and is raised once the running ones have ended.

    Returns {"members": [dirs], "seconds": wall seconds, "jobs": members at a time}.
    """
    from molpipe.io.checkpoint import checkpoints
    from molpipe.training.train import train

    if config.backend == "mpi":
        raise ValueError("--ensemble runs its members on threads of one machine; it cannot "
                         "be combined with --backend mpi")
    configs = member_configs(config)
    dirs = member_dirs(out_dir, len(configs))
    if not resume:                      # the ensemble's settings first: --resume reads them
        from molpipe.training.run_dir import CONFIG_TOML, SETTINGS

        Path(out_dir).mkdir(parents=True, exist_ok=True)
        (Path(out_dir) / SETTINGS).write_text(json.dumps(config.to_dict(), indent=2) + "\n")
        (Path(out_dir) / CONFIG_TOML).write_text(config.to_toml(), encoding="utf-8")
    emit = progress or (lambda i, event, **kw: None)
    failed = threading.Event()

    def one(i: int) -> None:
        if failed.is_set():
            return
        d = dirs[i]
        if resume and (d / "report.json").is_file():
            emit(i, "done", report=None)
            return
        again = resume and d.is_dir() and bool(checkpoints(d))
        try:
            train(TrainConfig() if again else configs[i], d,
                  progress=lambda event, **kw: emit(i, event, **kw), resume=again)
        except BaseException:
            failed.set()
            raise

    t0 = time.perf_counter()
    jobs = min(config.ensemble_jobs, len(configs))
    if jobs == 1:
        for i in range(len(configs)):
            one(i)
    else:
        first = 0 if _kernels_ready() else 1
        if first:                          # numba compiles once, not once per member at once
            one(0)
        with ThreadPoolExecutor(jobs, thread_name_prefix="member") as pool:
            futures = [pool.submit(one, i) for i in range(first, len(configs))]
            errors = [f.exception() for f in futures]
        first = next((e for e in errors if e is not None), None)
        if first is not None:
            raise first
    return {"members": [str(d) for d in dirs], "seconds": time.perf_counter() - t0,
            "jobs": jobs}


def _kernels_ready() -> bool:
    from molpipe.training.run_dir import kernels_cached

    return kernels_cached()


def saved_settings(out_dir: str | Path) -> TrainConfig | None:
    """The settings of the ensemble directory ``out_dir`` (None if it is not one)."""
    from molpipe.training.run_dir import SETTINGS

    path = Path(out_dir) / SETTINGS
    if not (Path(out_dir) / MEMBER.format(0)).is_dir() or not path.is_file():
        return None
    config = TrainConfig.from_file(path)
    return config if config.ensemble > 1 else None
