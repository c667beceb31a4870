"""Crafted model directories and checkpoints are refused with a clear error — never unpickled,
never allocated from a declared size, never read through a symlink or outside the directory."""

import hashlib
import io
import json
import os
import tracemalloc
import zipfile

import numpy as np
import pytest

from molpipe.io.checkpoint import CheckpointError, load_checkpoint, save_checkpoint
from molpipe.io.model import ModelError, load_model, read_model_config, save_model
from molpipe.nn.network import NetworkConfig, build_network

META = {"atom_dim": 6, "bond_dim": 3, "targets": ["y"], "task": "regression",
        "featurizer_version": "1", "min_rounds": 2, "max_rounds": 6}


@pytest.fixture
def model(tmp_path):
    """A valid model directory (hidden 4) and its state."""
    net = build_network(NetworkConfig(hidden=4), 6, 3, 1, seed=0)
    state = net.state_dict()
    return save_model(tmp_path / "model", net.config, state, META), state


def config(d):
    return json.loads((d / "config.json").read_text())


def write_config(d, doc):
    (d / "config.json").write_text(json.dumps(doc))


def reseal(d):
    """Recompute the checksum: the deeper checks, not the checksum, must refuse."""
    doc = config(d)
    doc["params_sha256"] = hashlib.sha256((d / "params.npz").read_bytes()).hexdigest()
    write_config(d, doc)


def refused(d, *fragments):
    with pytest.raises(ModelError) as err:
        load_model(d)
    text = str(err.value)
    assert "\n" not in text
    for frag in fragments:
        assert frag in text, text
    return text


def test_a_valid_model_round_trips(model):
    d, state = model
    net, cfg = load_model(d)
    assert all(np.array_equal(net.state_dict()[k], state[k]) for k in state)
    assert cfg["params"] == "params.npz" and not (d.parent / "model.tmp").exists()


def test_wrong_shape_missing_and_extra_arrays(model):
    d, state = model
    k = next(iter(state))
    np.savez(d / "params.npz", **{**state, k: np.zeros((2, 2), state[k].dtype)})
    reseal(d)
    refused(d, "params.npz", repr(k), "needs")
    np.savez(d / "params.npz", **{n: v for n, v in state.items() if n != k})
    reseal(d)
    refused(d, "params.npz", "missing", k)
    np.savez(d / "params.npz", **state, extra=np.zeros(3))
    reseal(d)
    refused(d, "params.npz", "unexpected", "extra")


def old_layout(a):
    """W_m (or an Adam slot of it) as saved before it became per-type blocks."""
    n_types, d_h, _ = a.shape
    return a.transpose(1, 0, 2).reshape(d_h, n_types * d_h)


def test_a_model_saved_with_the_old_w_m_layout_loads_and_a_wrong_shape_does_not(tmp_path):
    net = build_network(NetworkConfig(hidden=4), 6, 3, 1, seed=0)
    state = net.state_dict()
    old = dict(state, **{"message.W_m": old_layout(state["message.W_m"])})
    d = save_model(tmp_path / "old", net.config, old, META)
    loaded, _ = load_model(d)
    got = loaded.state_dict()
    assert got["message.W_m"].shape == (4, 4, 4)
    assert all(np.array_equal(got[k], state[k]) for k in state)
    d = save_model(tmp_path / "bad", net.config, dict(old, **{"message.W_m": old["message.W_m"].T}),
                   META)
    refused(d, "params.npz", "'message.W_m'", "needs")


def test_a_checkpoint_with_the_old_w_m_layout_resumes_the_same_state(tmp_path):
    from molpipe.training.engines import make_optimizers
    from molpipe.io.checkpoint import restore_state, state_arrays

    def make():
        network = build_network(NetworkConfig(hidden=4, propagate="fused"), 6, 3, 1, seed=0)
        return network, make_optimizers(network, 1e-3)

    network, opts = make()
    rng = np.random.default_rng(0)
    for _ in range(2):                              # Adam slots that are not zero
        for name, opt in opts.items():
            opt.step({k: rng.normal(size=p.shape).astype(p.dtype) for k, p in opt.params.items()})
    best = {k: v + 1 for k, v in network.state_dict().items()}
    arrays, scalars = state_arrays(network, opts, best)
    old = {k: old_layout(v) if k.endswith("W_m") else v for k, v in arrays.items()}
    assert sorted(k for k in old if old[k].shape != arrays[k].shape) == [
        "best/propagate.W_m", "net/propagate.W_m", "opt/propagate/m.W_m", "opt/propagate/v.W_m"]
    save_checkpoint(tmp_path, 0, {"epoch": 0}, old)
    _, loaded, _ = load_checkpoint(tmp_path)
    fresh, fresh_opts = make()
    got_best = restore_state(loaded, scalars, fresh, fresh_opts)
    again, _ = state_arrays(fresh, fresh_opts, got_best)
    assert again.keys() == arrays.keys()
    for k, v in arrays.items():
        assert again[k].shape == v.shape, k
        np.testing.assert_array_equal(again[k], v)
    bad = dict(old, **{"opt/propagate/v.W_m": old["opt/propagate/v.W_m"].T})
    with pytest.raises(ValueError, match="v.W_m"):
        restore_state(bad, scalars, *make())


def _npy_member(shape, dtype="<f4", data=b""):
    buf = io.BytesIO()
    np.lib.format.write_array_header_1_0(buf, {"descr": dtype, "fortran_order": False, "shape": shape})
    return buf.getvalue() + data


def test_a_huge_declared_shape_is_refused_before_allocating(model):
    d, state = model
    with zipfile.ZipFile(d / "params.npz", "w") as z:
        for k, v in state.items():
            z.writestr(k + ".npy", _npy_member((10**6, 10**6), data=b"\0" * 64))
    reseal(d)
    tracemalloc.start()
    try:
        refused(d, "params.npz", "declares shape")
        peak = tracemalloc.get_traced_memory()[1]
    finally:
        tracemalloc.stop()
    assert peak < 20 << 20              # nowhere near the 4 TB the header claims


def test_an_object_array_is_refused_without_unpickling(model, tmp_path):
    d, state = model
    marker = tmp_path / "unpickled"

    class Boom:
        def __reduce__(self):
            return (open, (str(marker), "w"))

    arr = np.empty(1, dtype=object)
    arr[0] = Boom()
    np.savez(d / "params.npz", **{**state, next(iter(state)): arr})
    reseal(d)
    refused(d, "params.npz", "dtype object")
    assert not marker.exists()


def test_path_traversal_and_symlinks_are_refused(model, tmp_path):
    d, _ = model
    doc = config(d)
    write_config(d, {**doc, "params": "../../etc/passwd"})
    refused(d, "config.json", "'params'", "plain file name")
    write_config(d, {**doc, "params": "../params.npz"})
    refused(d, "config.json", "'params'")
    write_config(d, doc)
    real = tmp_path / "elsewhere.npz"
    os.replace(d / "params.npz", real)
    os.symlink(real, d / "params.npz")
    refused(d, "params.npz", "symbolic link")
    os.remove(d / "params.npz")
    os.replace(real, d / "params.npz")
    load_model(d)                               # back to valid
    os.replace(d / "config.json", tmp_path / "config.json")
    os.symlink(tmp_path / "config.json", d / "config.json")
    refused(d, "config.json", "symbolic link")


def test_truncated_npz_and_checksum_mismatch(model):
    d, _ = model
    blob = (d / "params.npz").read_bytes()
    (d / "params.npz").write_bytes(blob[: len(blob) // 2])
    refused(d, "params.npz", "checksum")
    reseal(d)
    refused(d, "params.npz", "not a valid npz")
    data = bytearray(blob)
    data[len(data) // 2] ^= 1
    (d / "params.npz").write_bytes(bytes(data))
    refused(d, "params.npz", "checksum does not match")


@pytest.mark.parametrize("change, fragment", [
    ({"hidden": 0}, "'hidden'"), ({"hidden": 5000}, "1..4096"), ({"hidden": True}, "'hidden'"),
    ({"hidden": "4"}, "'hidden'"), ({"dtype": "object"}, "'dtype'"), ({"evil": 1}, "unknown"),
])
def test_network_config_schema(model, change, fragment):
    d, _ = model
    doc = config(d)
    doc["network"].update(change)
    write_config(d, doc)
    refused(d, "config.json", fragment)


@pytest.mark.parametrize("change, fragment", [
    ({"targets": "y"}, "'targets'"), ({"targets": [1]}, "'targets'"), ({"targets": []}, "'targets'"),
    ({"atom_dim": -1}, "'atom_dim'"), ({"bond_dim": 10**9}, "'bond_dim'"),
    ({"task": "magic"}, "'task'"), ({"format": 99}, "'format'"), ({"params_sha256": "x"}, "hex"),
    ({"__class__": "os.system"}, "unknown"), ({"network": []}, "'network'"),
])
def test_model_config_schema(model, change, fragment):
    d, _ = model
    write_config(d, {**config(d), **change})
    with pytest.raises(ModelError, match="config.json") as err:
        read_model_config(d)
    assert fragment in str(err.value)


def test_not_json_and_oversized_config(model):
    d, _ = model
    (d / "config.json").write_text("{not json")
    refused(d, "config.json", "not valid JSON")
    (d / "config.json").write_text(" " * (2 << 20))
    refused(d, "config.json", "bytes")
    (d / "config.json").unlink()
    refused(d, "no config.json")


def test_a_nan_model_is_refused(model):
    d, state = model
    k = next(iter(state))
    bad = state[k].copy()
    bad.flat[0] = np.nan
    np.savez(d / "params.npz", **{**state, k: bad})
    reseal(d)
    refused(d, "params.npz", "NaN")


# -- checkpoints -----------------------------------------------------------------------
def _reseal_checkpoint(path):
    doc = json.loads((path / "state.json").read_text())
    doc["arrays_sha256"] = hashlib.sha256((path / "arrays.npz").read_bytes()).hexdigest()
    (path / "state.json").write_text(json.dumps(doc))


def test_crafted_checkpoints_are_refused_not_unpickled(tmp_path):
    save_checkpoint(tmp_path, 1, {"epoch": 1}, {"net/a": np.ones(3)})
    path = save_checkpoint(tmp_path, 2, {"epoch": 2}, {"net/a": np.zeros(3)})
    assert load_checkpoint(tmp_path)[0]["epoch"] == 2
    arr = np.empty(1, dtype=object)
    arr[0] = {"x": 1}
    np.savez(path / "arrays.npz", a=arr)
    _reseal_checkpoint(path)
    # the object-dtype checkpoint is skipped with its reason; the previous one loads
    state, arrays, used = load_checkpoint(tmp_path)
    assert state["epoch"] == 1 and np.array_equal(arrays["net/a"], np.ones(3))
    with zipfile.ZipFile(path / "arrays.npz", "w") as z:
        z.writestr("net/a.npy", _npy_member((10**12,), data=b"\0" * 8))
    _reseal_checkpoint(path)
    assert load_checkpoint(tmp_path)[0]["epoch"] == 1
    (tmp_path / "checkpoints" / "epoch-0001" / "arrays.npz").write_bytes(b"PK\x03\x04broken")
    with pytest.raises(CheckpointError) as err:
        load_checkpoint(tmp_path)
    assert "declares shape" in str(err.value) and "checksum" in str(err.value)


# -- the command line -----------------------------------------------------------------
@pytest.mark.parametrize("attack", ["symlink", "object", "traversal", "huge"])
def test_molpipe_predict_refuses_a_crafted_model_in_one_line_exit_2(model, tmp_path, attack):
    from typer.testing import CliRunner

    from cli import app

    d, state = model
    if attack == "symlink":
        os.replace(d / "params.npz", tmp_path / "real.npz")
        os.symlink(tmp_path / "real.npz", d / "params.npz")
    elif attack == "object":
        np.savez(d / "params.npz", **{**state, next(iter(state)): np.array([{}], dtype=object)})
        reseal(d)
    elif attack == "traversal":
        write_config(d, {**config(d), "params": "../../etc/passwd"})
    else:
        with zipfile.ZipFile(d / "params.npz", "w") as z:
            z.writestr(next(iter(state)) + ".npy", _npy_member((2**40,), data=b"\0" * 16))
        reseal(d)
    result = CliRunner().invoke(app, ["predict", "--model", str(d), "CCO"])
    assert result.exit_code == 2, result.output
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and lines[0].startswith("error:") and "Traceback" not in result.output
    assert str(d) in lines[0]
