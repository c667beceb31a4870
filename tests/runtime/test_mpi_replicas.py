"""Data-parallel replicas over MPI (``mpi_replicas.py``, ``deltas.py``): the toy network under
``mpiexec -n 1`` (bit for bit the fused thread layout) and ``-n 2`` (the replicas agree, their
deltas add up, a failing or stuck rank stops the run with its rank named, never a hang).

The MPI parts are jobs (``python -m tests.runtime.test_mpi_replicas CASE OUT``, run by pytest
in a subprocess with a timeout): rank 0 runs ``CASE`` and writes OUT; the others serve.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molpipe.runtime.mpi_replicas import shard

from .test_mpi import ROOT, _mpiexec, needs_mpi
from .toy import FIRST, make_items, make_net, reference, route

N_ITEMS = 60


def build_toy(seed: int, n_items: int = N_ITEMS, fail_key=None, stall_key=None) -> dict:
    """What ranks 1.. build: the toy network from ``seed``; ``load([i])`` is item i's instance."""
    stages, opts = make_net(seed=seed)
    if fail_key is not None:
        stages["head"].fail_keys.add(fail_key)
    if stall_key is not None:
        stages["head"].stall_keys.add(stall_key)
    insts = [inst for _, inst, _ in make_items(n_items, seed=3)]
    return {"stages": stages, "optimizers": opts, "route": route, "first": FIRST,
            "load": lambda spec: insts[int(spec[0])]}


def _group(seed: int, *, mak: int = 1, muf: int = 1, every: int = 1, stall: float = 60.0, **args):
    from molpipe.runtime.mpi_replicas import DataParallel

    stages, opts = make_net(seed=seed)
    build = {"fn": "tests.runtime.test_mpi_replicas:build_toy", "args": {"seed": seed, **args}}
    dp = DataParallel(stages, opts, route, FIRST, build=build, every=every, record=True,
                      options={"max_active_keys": mak, "min_update_frequency": muf,
                               "stall_timeout": stall},
                      spec_of=lambda inst: np.array([inst.k]), describe=lambda k: f"toy #{k}")
    return dp, stages


def _keyed(items):
    """Toy items whose instances know their own index (what ``spec_of`` sends)."""
    for k, inst, _ in items:
        object.__setattr__(inst, "k", k)
    return items


def _flat(stages) -> dict:
    return {f"{s}/p/{k}": v for s, st in stages.items() for k, v in st.params.items()}


def run_case(case: str, out: Path) -> None:
    """Rank 0 of a job: ``case`` run, its parameters and report written to ``out``."""
    from molpipe.runtime import PipelineError

    items = _keyed(make_items(N_ITEMS, seed=3))
    report: dict = {}
    if case == "one":                           # mpiexec -n 1
        dp, stages = _group(7)
        with dp:
            res = dp.run(items)
        np.savez(out / "one.npz", **_flat(stages))
        report["keys"] = sorted(res.train_keys)
    elif case == "two":                         # mpiexec -n 2
        dp, stages = _group(7)
        start = {k: v.copy() for k, v in _flat(stages).items()}
        with dp:
            res = dp.run(items)
            peer = dp.pull()[1][1]
            report["keys"] = sorted(res.train_keys)
            report["loss_keys"] = sorted(res.loss)
            report["stats"] = {str(r): s for r, s in dp.replica_stats.items()}
            mine = {f"{s}/p/{k}": v for s, d in dp.exchange.sent_sum.items() for k, v in d.items()}
            theirs = {k.replace("sent/", "", 1).replace("/", "/p/", 1): v
                      for k, v in peer.items() if k.startswith("sent/")}
            np.savez(out / "two.npz", **{f"start/{k}": v for k, v in start.items()},
                     **{f"rank0/{k}": v for k, v in _flat(stages).items()},
                     **{f"rank1/{k}": v for k, v in peer.items() if "/p/" in k},
                     **{f"sent0/{k}": v for k, v in mine.items()},
                     **{f"sent1/{k}": v for k, v in theirs.items()})
            res2 = dp.run(items)                # a second run starts from rank 0's copy
            report["losses"] = [float(np.mean(list(r.loss.values()))) for r in (res, res2)]
        dp, _ = _group(8, mak=4, muf=2, every=3)
        with dp:
            res = dp.run(items)
            report["every3_keys"] = sorted(res.train_keys)
            report["every3_stats"] = {str(r): s for r, s in dp.replica_stats.items()}
    elif case == "fault":                       # mpiexec -n 2: rank 1 fails on key 17
        dp, _ = _group(7, mak=2, fail_key=17)
        try:
            with dp:
                dp.run(items)
            report["fault"] = "no error"
        except PipelineError as e:
            report["fault"] = str(e)
        dp, stages = _group(9)                  # the job goes on: a new group trains
        with dp:
            report["after"] = sorted(dp.run(items).train_keys)
    elif case == "stall":                       # mpiexec -n 2: rank 1 never finishes key 17
        dp, _ = _group(7, stall_key=17, stall=3.0)
        with dp:
            dp.run(items)
    (out / "report.json").write_text(json.dumps(report))


def _job(n: int, case: str, out: Path, timeout: float = 120):
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    return subprocess.run([_mpiexec(), "-n", str(n), sys.executable, "-m",
                           "tests.runtime.test_mpi_replicas", case, str(out)], cwd=ROOT, env=env,
                          capture_output=True, text=True, timeout=timeout)


def _ok(proc) -> dict:
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"


@needs_mpi
def test_one_replica_is_the_fused_thread_layout_bit_for_bit(tmp_path):
    from molpipe.runtime import Pipeline

    _ok(_job(1, "one", tmp_path))
    items = make_items(N_ITEMS, seed=3)
    stages, opts = make_net(seed=7)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=1, placement={s: 0 for s in stages}) as p:
        p.run(items)
    ref, ref_opts = make_net(seed=7)
    reference(ref, ref_opts, items)
    with np.load(tmp_path / "one.npz") as z:
        for k, v in _flat(stages).items():
            assert np.array_equal(z[k], v), k
            s, _, name = k.split("/")
            assert np.array_equal(z[k], ref[s].params[name]), k
    assert not np.array_equal(_flat(stages)["head/p/w"], _flat(make_net(seed=7)[0])["head/p/w"])
    assert json.loads((tmp_path / "report.json").read_text())["keys"] == list(range(N_ITEMS))


@pytest.fixture(scope="module")
def two(tmp_path_factory):
    out = tmp_path_factory.mktemp("two")
    _ok(_job(2, "two", out))
    return out, json.loads((out / "report.json").read_text())


@needs_mpi
def test_two_replicas_train_every_instance_once_and_exchange_deltas(two):
    _, report = two
    assert report["keys"] == list(range(N_ITEMS)) == report["loss_keys"]
    assert report["every3_keys"] == list(range(N_ITEMS))
    for stats in (report["stats"], report["every3_stats"]):
        assert set(stats) == {"0", "1"}
        assert all(s["frames_sent"] > 0 and s["frames_applied"] > 0 for s in stats.values())
    # a stage sends every 3 of its updates: fewer frames than every update
    assert (sum(s["frames_sent"] for s in report["every3_stats"].values())
            < sum(s["frames_sent"] for s in report["stats"].values()))
    assert report["losses"][1] < report["losses"][0]


@needs_mpi
def test_the_replicas_end_at_the_start_plus_every_sent_delta(two):
    out, _ = two
    with np.load(out / "two.npz") as z:
        names = [k[len("start/"):] for k in z.files if k.startswith("start/")]
        moved = 0.0
        for k in names:
            expect = z[f"start/{k}"] + z[f"sent0/{k}"] + z[f"sent1/{k}"]
            np.testing.assert_allclose(z[f"rank0/{k}"], expect, rtol=0, atol=1e-12, err_msg=k)
            np.testing.assert_allclose(z[f"rank1/{k}"], z[f"rank0/{k}"], rtol=0, atol=1e-12,
                                       err_msg=k)
            moved = max(moved, float(np.abs(z[f"sent1/{k}"]).max()))
        assert moved > 1e-3                     # rank 1 did train and send


@needs_mpi
def test_a_failing_replica_stops_the_run_naming_its_rank_and_the_job_goes_on(tmp_path):
    _ok(_job(2, "fault", tmp_path))
    report = json.loads((tmp_path / "report.json").read_text())
    err = report["fault"]
    assert "replica on MPI rank 1" in err and "toy failure at key 17" in err, err
    assert "'head'" in err and "key 17" in err
    assert report["after"] == list(range(N_ITEMS))


@needs_mpi
def test_a_stuck_replica_is_named_and_the_job_aborted_not_hung(tmp_path):
    proc = _job(2, "stall", tmp_path, timeout=90)
    assert proc.returncode != 0
    text = proc.stdout + proc.stderr
    # rank 1's own control node says it stalled, or rank 0 names it as not done: either way
    # the error names rank 1 and the job ends within the timeout
    assert "MPI rank 1" in text or "MPI ranks [1]" in text, text[-2000:]
    assert not (tmp_path / "report.json").exists()


def test_shares_keep_the_order_and_balance_the_weights():
    w = [5, 1, 1, 1, 1, 1, 4, 1]
    got = shard(w, 2)
    assert got == [[0, 6], [1, 2, 3, 4, 5, 7]]
    assert sorted(i for s in got for i in s) == list(range(len(w)))
    assert shard([1.0] * 5, 3) == [[0, 3], [1, 4], [2]]
    assert shard([], 2) == [[], []]


if __name__ == "__main__":
    from molpipe.runtime.mpi import world
    from molpipe.runtime.mpi_replicas import serve_replicas

    comm = world()
    if comm.rank == 0:
        run_case(sys.argv[1], Path(sys.argv[2]))
    else:
        serve_replicas(comm)
