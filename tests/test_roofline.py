"""The roofline's FLOP counters against a hand count, and bench_kernels --roofline's JSON."""

import json
import sys

import numpy as np

from benchmarks import bench_kernels
from molpipe.data.instance import pack
from molpipe.measure.flops import Count, Shapes, embed_flops, message_flops, update_flops
from molpipe.measure.roofline import ROW_KEYS, _parse_size, l2_cache, stage_counts
from molpipe.nn.network import NetworkConfig, build_network
from tests.nn.graphs import D_E, D_V, benzene_like, naphthalene_like

# 3 atoms, 4 directed edges over pairs of types (1, 0, 0, 2), d_h 2; 3 atoms active in
# round 0, 1 in round 1
S = Shapes(n=3, n_e=4, pairs=(1, 0, 0, 2), n_r=1, n_ra=3, n_mols=1, d_v=5, d_e=3, d_h=2,
           d_ffn=2, k=2, d_x=0, n_out=1, active=(3, 1), n_rounds=2)


def test_count_adds_matmuls_and_terms():
    c = Count().mm(2, 3, 4).mm(0, 3, 4).add("x", 5).add("x", 1)
    assert c.matmuls == [(2, 3, 4)] and c.matmul_flops == 48 and c.flops == 54


def test_embed_by_hand():
    f, b = embed_flops(S)
    # V W_v 2*3*5*2, B W_e 2*3*3*2, bias 3*2, tanh 3*2, bond sum 4*3, deg b_e 2*3*2
    assert f.flops == 60 + 36 + 6 + 6 + 12 + 12
    # dW_v, dW_e as above, tanh' 3*6, db_v 6 + db_e 12, g += (5 + 3 + 2) * 2
    assert b.flops == 60 + 36 + 18 + 18 + 20


def test_message_by_hand():
    f, b = message_flops(S, 0)
    # edge sum 4*2, S_t W_m[t] 2*1*2*2 + 2*2*2*2, M += 3*2, M W_x 2*3*2*6, bias 3*3*2
    assert f.flops == 8 + 8 + 16 + 6 + 72 + 18
    # dW_x, dM 72 each, db 18, dW_m and dS 8 + 8 and 16 + 16, g += 3*4 + 6 + 4*4,
    # edge scatter 4*2, dH += 6, dEa += 6 (round 0 of 2)
    assert b.flops == 144 + 18 + 48 + 34 + 8 + 6 + 6
    assert message_flops(S, 1)[1].flops == b.flops - 6


def test_update_by_hand():
    f0, _ = update_flops(S, 0)
    f1, b1 = update_flops(S, 1)
    assert f0.flops == 72 + 18 + 11 * 3 * 2            # H U_h, bias, GRU on 3 atoms
    assert f1.flops == 72 + 18 + 11 * 1 * 2            # one atom still active
    # GRU' 16*1*2, dU_h and dH 72 each, db 18, g += 3*4 + 6, dH += 6
    assert b1.flops == 32 + 144 + 18 + 18 + 6


def test_counts_cover_the_path():
    rng = np.random.default_rng(0)
    inst = pack([benzene_like(rng), naphthalene_like(rng)], np.zeros((2, 1), np.float32))
    net = build_network(NetworkConfig(hidden=8), D_V, D_E, 1)
    counts = stage_counts(net, inst)
    assert set(counts) == {name for name, _ in net.path(inst)}
    assert counts["message"][2] == inst.n_rounds
    assert all(f.flops > 0 and b.flops > 0 for f, b, _ in counts.values())


def test_l2_size():
    assert _parse_size("1024K") == 1 << 20 and _parse_size("32M\n") == 32 << 20
    size, source = l2_cache()
    assert size is None or size > 0 and source


def test_roofline_json(tmp_path, monkeypatch, capsys):
    out = tmp_path / "roofline.json"
    monkeypatch.setattr(sys, "argv", ["bench_kernels", "--roofline", "--repeat", "2",
                                      "--hidden", "16", "--peak-n", "128", "--json",
                                      "--json-path", str(out)])
    bench_kernels.main()
    assert "of peak" in capsys.readouterr().out
    res = json.loads(out.read_text())
    assert {"peak", "l2_bytes", "l2_source", "rows", "data", "hidden", "instance"} <= set(res)
    assert {"numba_gflops", "numpy_gflops", "n"} <= set(res["peak"])
    stages = {r["stage"] for r in res["rows"]}
    assert {"embed", "message", "update", "readout", "loss"} <= stages
    for r in res["rows"]:
        assert set(ROW_KEYS) <= set(r)
        assert r["us_per_call"] > 0 and r["us_per_call_warm"] > 0 and r["working_set_bytes"] >= r["params_bytes"]
