"""MPI backend: the toy network under ``mpiexec -n 3`` (control + 2 worker ranks) against the
sequential reference computed here, in the test process; wire format and placement alone.

The MPI part is one job (``python -m tests.runtime.test_mpi OUT``, run below by pytest in a
subprocess with a timeout): rank 0 trains several pipelines one after another and writes
their parameters and results to OUT; the other ranks serve workers.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest

from molpipe.runtime import wire
from molpipe.runtime.message import Kind, Message
from molpipe.runtime.mpi import balanced_placement

from .toy import FIRST, ToyInst, make_items, make_net, reference, route

COLOCATED = {"embed": 0, "loop": 0, "gate": 1, "head": 1, "loss": 1}
ROOT = Path(__file__).resolve().parents[2]
N_ITEMS = 120


def build_toy(seed: int, fail_stage: str | None = None, fail_key=None):
    """What every worker rank builds: the toy network from ``seed`` (and a failure hook)."""
    stages, opts = make_net(seed=seed)
    if fail_stage is not None:
        stages[fail_stage].fail_keys.add(fail_key)
    return stages, opts, route


CASES = {  # name: (seed, schedule, mak, muf, epochs)
    "exact": (7, "async", 1, 1, 1),
    "sync": (8, "sync", 4, 1, 1),
    "async": (9, "async", 4, 3, 2),
}


def _params(stages) -> dict:
    return {f"{s}.{k}": v for s, st in stages.items() for k, v in st.params.items()}


def run_cases(out: Path) -> None:
    """Rank 0 of the MPI job: every case, then a failing stage; results to ``out``."""
    from molpipe.runtime import Pipeline, PipelineError

    items = make_items(N_ITEMS, seed=3, eval_every=0)
    report = {}
    for name, (seed, schedule, mak, muf, epochs) in CASES.items():
        stages, opts = make_net(seed=seed)
        build = {"fn": "tests.runtime.test_mpi:build_toy", "args": {"seed": seed}}
        with Pipeline(stages, opts, route, FIRST, max_active_keys=mak, min_update_frequency=muf,
                      schedule=schedule, placement=COLOCATED, backend="mpi",
                      backend_options={"build": build}) as p:
            runs = [p.run(items) for _ in range(epochs)]
        np.savez(out / f"{name}.npz", **_params(stages))
        report[name] = {"loss": {str(k): v for k, v in runs[0].loss.items()},
                        "train_keys": sorted(runs[-1].train_keys),
                        "n_in_flight_max": max(r.n_in_flight_max for r in runs),
                        "busy_workers": sorted(runs[-1].busy), "n_trace": len(runs[-1].trace)}
    stages, opts = make_net(seed=7)
    build = {"fn": "tests.runtime.test_mpi:build_toy",
             "args": {"seed": 7, "fail_stage": "head", "fail_key": 17}}
    p = Pipeline(stages, opts, route, FIRST, max_active_keys=4, placement=COLOCATED,
                 backend="mpi", backend_options={"build": build}, describe=lambda k: f"toy #{k}")
    try:
        with p:
            p.run(items)
        report["fault"] = "no error"
    except PipelineError as e:
        report["fault"] = str(e)
    # the job still serves a new pipeline after the failure
    stages, opts = make_net(seed=7)
    with Pipeline(stages, opts, route, FIRST, max_active_keys=1, placement=COLOCATED, backend="mpi",
                  backend_options={"build": {"fn": "tests.runtime.test_mpi:build_toy",
                                             "args": {"seed": 7}}}) as p:
        p.run(items[:10])
    np.savez(out / "after_fault.npz", **_params(stages))
    (out / "report.json").write_text(json.dumps(report))


def _mpiexec() -> str | None:
    try:
        import mpi4py  # noqa: F401
    except ImportError:
        return None
    return shutil.which("mpiexec")


needs_mpi = pytest.mark.skipif(_mpiexec() is None,
                               reason="mpi4py or mpiexec missing (pip install 'molpipe[mpi]')")


@pytest.fixture(scope="module")
def mpi_job(tmp_path_factory):
    out = tmp_path_factory.mktemp("mpi")
    env = {**os.environ, "OMP_NUM_THREADS": "1", "OPENBLAS_NUM_THREADS": "1"}
    proc = subprocess.run([_mpiexec(), "-n", "3", sys.executable, "-m", "tests.runtime.test_mpi",
                           str(out)], cwd=ROOT, env=env, capture_output=True, text=True, timeout=120)
    assert proc.returncode == 0, f"mpiexec failed:\n{proc.stdout}\n{proc.stderr}"
    return out, json.loads((out / "report.json").read_text())


def _max_diff(path: Path, stages) -> float:
    with np.load(path) as z:
        return max(float(np.max(np.abs(z[k] - v))) for k, v in _params(stages).items())


@needs_mpi
def test_mak1_muf1_reproduces_the_reference_exactly(mpi_job):
    out, report = mpi_job
    items = make_items(N_ITEMS, seed=3)
    stages, opts = make_net(seed=7)
    ref_loss = reference(stages, opts, items, group=1)
    assert _max_diff(out / "exact.npz", stages) < 1e-12
    assert _max_diff(out / "exact.npz", make_net(seed=7)[0]) > 1e-2        # it did train
    assert max(abs(report["exact"]["loss"][str(k)] - v) for k, v in ref_loss.items()) < 1e-12
    assert report["exact"]["busy_workers"] == [0, 1]


@needs_mpi
def test_sync_matches_group_mean_reference(mpi_job):
    out, report = mpi_job
    items = make_items(N_ITEMS, seed=3)
    stages, opts = make_net(seed=8)
    reference(stages, opts, items, group=4)
    assert _max_diff(out / "sync.npz", stages) < 1e-12
    assert report["sync"]["n_in_flight_max"] == 4


@needs_mpi
def test_async_completes_every_instance_with_overlap(mpi_job):
    out, report = mpi_job
    assert report["async"]["train_keys"] == list(range(N_ITEMS))
    assert 1 < report["async"]["n_in_flight_max"] <= 4
    assert _max_diff(out / "async.npz", make_net(seed=9)[0]) > 1e-3


@needs_mpi
def test_a_failing_rank_names_rank_stage_and_instance_and_the_job_goes_on(mpi_job):
    out, report = mpi_job
    err = report["fault"]
    assert "worker 1" in err and "MPI rank 2" in err and "'head'" in err
    assert "key 17" in err and "toy #17" in err and "toy failure at key 17" in err
    stages, opts = make_net(seed=7)
    reference(stages, opts, make_items(N_ITEMS, seed=3)[:10], group=1)
    assert _max_diff(out / "after_fault.npz", stages) < 1e-12


@needs_mpi
@pytest.mark.slow
def test_a_placement_that_does_not_fit_the_job_is_one_line_and_nothing_hangs(tmp_path):
    code = ("from cli import app; app(['train', 'esol', '--backend', 'mpi', '--epochs', '1', "
            f"'--out', {str(tmp_path / 'run')!r}, '--placement', 'embed,message/update/rings,readout,loss'])")
    proc = subprocess.run([_mpiexec(), "-n", "3", sys.executable, "-c", code], cwd=ROOT,
                          capture_output=True, text=True, timeout=120,
                          env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode != 0
    assert "3 workers need 4 MPI ranks" in proc.stdout + proc.stderr
    assert "launch with mpiexec -n 4" in proc.stdout + proc.stderr
    assert "Traceback" not in proc.stdout + proc.stderr


# -- without MPI: the wire format and the placement ------------------------------------------
def test_backend_mpi_without_mpi4py_says_how_to_install_and_exits_2():
    code = ("import sys; sys.modules['mpi4py'] = None; from cli import app; "
            "app(['train', 'esol', '--backend', 'mpi', '--epochs', '1'])")
    proc = subprocess.run([sys.executable, "-c", code], cwd=ROOT, capture_output=True, text=True,
                          timeout=60, env={**os.environ, "COLUMNS": "200"})
    assert proc.returncode == 2
    assert "pip install 'molpipe[mpi]'" in proc.stdout + proc.stderr



def test_wire_round_trip_keeps_arrays_scalars_and_instance():
    inst = ToyInst(np.arange(3.0), 0.5, 2, True)
    payload = {"h": np.arange(12, dtype=np.float32).reshape(3, 4)[:, ::2],   # not contiguous
               "idx": np.array([3, 1], dtype=np.int32), "empty": np.zeros((0, 5))}
    msg = Message(Kind.BACKWARD, (4, "a"), "loop", 2, payload, (("embed", 0), ("loop", 1)), inst)
    got = wire.decode(*wire.unpack(wire.encode(msg, gen=3)))
    assert (got.kind, got.key, got.stage, got.step, got.path) == \
        (Kind.BACKWARD, (4, "a"), "loop", 2, (("embed", 0), ("loop", 1)))
    for k, v in payload.items():
        assert got.payload[k].dtype == v.dtype and np.array_equal(got.payload[k], v)
    assert isinstance(got.inst, ToyInst) and np.array_equal(got.inst.x, inst.x)
    assert (got.inst.y, got.inst.n_rounds, got.inst.gated) == (0.5, 2, True)


def test_a_skip_and_its_reason_survive_the_wire():
    for kind, why in ((Kind.DONE, "stage 'readout' input gradient 'H' holds 3 NaN"),
                      (Kind.RESULT, "why"), (Kind.BACKWARD, "")):
        got = wire.decode(*wire.unpack(wire.encode(Message(kind, 3, "embed", skip=why))))
        assert got.skip == why
    assert wire.decode(*wire.unpack(wire.encode(Message(Kind.RESULT, 3, "loss")))).skip is None
    err = wire.decode(*wire.unpack(wire.encode(Message(Kind.ERROR, worker=1, error="Traceback"))))
    assert err.error == "Traceback" and err.skip is None and err.stats is None
    stats = {"busy": 0.5, "trace": [[0.0, 1.0, 3, "embed", 0, "forward"]]}
    assert wire.decode(*wire.unpack(wire.encode(Message(Kind.STATS, worker=1, stats=stats)))).stats == stats


def test_a_frame_filled_in_place_unpacks_like_pack_and_carries_no_stale_bytes():
    a, b = np.arange(6.0).reshape(2, 3), np.array([7, 8, 9], dtype=np.int16)
    layout = {"a": (a.dtype, a.shape), "b": (b.dtype, b.shape), "e": (np.float32, (0, 4))}
    buf, views = wire.frame({"k": "delta", "s": 2}, layout)
    np.subtract(a, 1.0, out=views["a"])
    views["b"][...] = b
    assert all(
        (v.ctypes.data - buf.ctypes.data) % wire.ALIGN == 0 for v in views.values() if v.size)
    head, arrays = wire.unpack(buf)
    assert head["k"] == "delta" and head["s"] == 2
    assert np.array_equal(arrays["a"], a - 1.0) and arrays["b"].dtype == np.int16
    assert np.array_equal(arrays["b"], b) and arrays["e"].shape == (0, 4)
    ref = wire.pack({"k": "delta", "s": 2}, {"a": a - 1.0, "b": b, "e": np.zeros((0, 4), np.float32)})
    assert np.array_equal(buf, ref)                       # the same bytes, padding included


def test_wire_refuses_what_it_cannot_send_without_pickle():
    with pytest.raises(TypeError, match="JSON-able"):
        wire.encode(Message(Kind.FORWARD, object(), "a"))
    with pytest.raises(TypeError, match="dtype object"):
        wire.encode(Message(Kind.FORWARD, 1, "a", payload={"x": np.array([None])}))


def test_balanced_placement_is_contiguous_and_minimises_the_heaviest_worker():
    stages = ["embed", "message", "update", "rings", "readout", "loss"]
    w = {"embed": 1, "message": 3, "update": 3, "rings": 1, "readout": 1, "loss": 0.2}
    p = balanced_placement(stages, 2, w)
    assert p == {"embed": 0, "message": 0, "update": 1, "rings": 1, "readout": 1, "loss": 1}
    assert balanced_placement(stages, 6) == {s: i for i, s in enumerate(stages)}
    p3 = balanced_placement(stages, 3, w)
    assert sorted(set(p3.values())) == [0, 1, 2] and list(p3.values()) == sorted(p3.values())
    with pytest.raises(ValueError):
        balanced_placement(stages, 7)


if __name__ == "__main__":
    from molpipe.runtime.mpi_rank import serve_unless_control

    if not serve_unless_control():
        run_cases(Path(sys.argv[1]))
