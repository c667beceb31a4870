"""Streamed epochs: plans of indices, instances packed as they are drawn, memory bounded
whatever the number of molecules, resume inside a multi-window epoch, --val-max."""

import csv
import json
import mmap

import numpy as np
import pytest

from molpipe.data.instance import group_by_plan
from molpipe.data.store import open_data
from molpipe.io.checkpoint import load_checkpoint
from molpipe.io.model import load_model
from molpipe.training import session as session_mod
from molpipe.training import stream
from molpipe.training.settings import SettingsError, TrainConfig
from molpipe.training.stream import LIVE, epoch_plan, release_pages
from molpipe.training.train import train


@pytest.fixture(scope="module")
def esol():
    return open_data("esol")


@pytest.fixture
def small_chunks(monkeypatch):
    """Chunks and windows far smaller than the bundled sets: streaming in many windows."""
    monkeypatch.setattr(stream, "CHUNK", 32)
    monkeypatch.setattr(stream, "WINDOW", 2)
    monkeypatch.setattr(stream, "PAGE_BUDGET", 1 << 20)
    monkeypatch.setattr(session_mod, "SCALING_CHUNK", 64)
    monkeypatch.setattr(stream, "EVAL_BLOCK", 8)


def _rows(store, n, seed=0):
    return np.sort(np.random.default_rng(seed).choice(len(store), n, replace=False))


def test_a_plan_that_fits_one_window_is_group_by_plan_over_all_rows(esol):
    rows = _rows(esol, 700)
    a, b = np.random.default_rng(3), np.random.default_rng(3)
    plan = epoch_plan(esol, rows, 16, a, first_key=40)
    groups = group_by_plan(esol.n_rounds[rows], esol.has_rings[rows], 16, b)
    assert len(plan) == len(groups) and plan.first_key == 40 and plan.next_key == 40 + len(groups)
    for i, g in enumerate(groups):
        np.testing.assert_array_equal(plan.members(i), rows[g])
        np.testing.assert_array_equal(plan.rows_of(40 + i), rows[g])
    assert a.bit_generator.state == b.bit_generator.state       # the generator used alike
    assert plan.rows_of(39) is None and plan.rows_of(plan.next_key) is None


def test_a_plan_in_windows_covers_every_row_once_one_plan_per_instance(esol):
    rows = _rows(esol, 1000, seed=1)
    chunk, window = 50, 3
    plan = epoch_plan(esol, rows, 16, np.random.default_rng(5), 0, chunk=chunk, window=window)
    np.testing.assert_array_equal(np.sort(plan.rows), rows)        # every row exactly once
    chunk_of = {int(r): i // chunk for i, r in enumerate(rows)}
    sizes = np.diff(plan.bounds)
    assert sizes.max() <= 16 and sizes.min() >= 1
    seen_chunks = []
    for i in range(len(plan)):
        r = plan.members(i)
        assert len({(int(esol.n_rounds[j]), bool(esol.has_rings[j])) for j in r}) == 1
        seen_chunks.append({chunk_of[int(j)] for j in r})
    # windows: the first instances draw from 3 chunks only, and not the first three
    first = set().union(*seen_chunks[:10])
    assert len(first) <= window and first != {0, 1, 2}
    again = epoch_plan(esol, rows, 16, np.random.default_rng(5), 0, chunk=chunk, window=window)
    np.testing.assert_array_equal(again.rows, plan.rows)
    other = epoch_plan(esol, rows, 16, np.random.default_rng(6), 0, chunk=chunk, window=window)
    assert not np.array_equal(other.rows, plan.rows)
    in_order = epoch_plan(esol, rows, 16, None, 0, chunk=chunk, window=window)
    np.testing.assert_array_equal(np.sort(in_order.rows[:150]), rows[:150])


class _CountingStore:
    def __init__(self, store):
        self.store, self.packed = store, []

    def pack(self, rows):
        self.packed.append(np.array(rows))
        return self.store.pack(rows)


def test_instances_are_packed_when_drawn_and_skipped_ones_never(esol):
    rows = _rows(esol, 300)
    plan = epoch_plan(esol, rows, 8, np.random.default_rng(0), 7, chunk=64, window=2)
    counting = _CountingStore(esol)
    it = plan.instances(counting, start=5, stop=9)
    assert counting.packed == []                                   # nothing before a draw
    key, inst = next(it)
    assert key == 12 and len(counting.packed) == 1
    np.testing.assert_array_equal(inst.rows, plan.members(5))
    np.testing.assert_array_equal(inst.V, esol.pack(plan.members(5)).V)
    assert [k for k, _ in it] == [13, 14, 15] and len(counting.packed) == 4


def _trained_peaks(tmp_path, name, limit):
    peaks = {}

    def progress(event, **kw):
        if event == "start":                  # after the scaling fit: training and evaluation
            peaks["fit"] = (LIVE.peak_instances, LIVE.peak_molecules)
            LIVE.reset()

    LIVE.reset()
    report = train(TrainConfig(data="esol", limit=limit, epochs=1, hidden=8,
                               molecules_per_instance=8, max_active_keys=4, trace=False),
                   tmp_path / name, progress=progress)
    return report, peaks["fit"], (LIVE.peak_instances, LIVE.peak_molecules)


def test_live_instances_stay_bounded_whatever_the_number_of_molecules(tmp_path, small_chunks):
    """One epoch over N and 4N molecules (chunks of 32, windows of 2, so both stream in
    many windows): the most packed instances alive at once is the pipeline's max_active_keys,
    plus the one the control node looks ahead, plus (for a moment) one a worker still holds
    after its completion was sent — whatever N; the scaling fit holds one chunk."""
    peaks = {}
    for n in (250, 1000):
        report, fit, run = _trained_peaks(tmp_path, f"n{n}", n)
        assert report["split_sizes"]["train"] == int(0.8 * n)
        assert json.loads((tmp_path / f"n{n}" / "report.json").read_text())["epochs"] == 1
        peaks[n] = run, len(report["utilization"])
        assert fit == (1, 64)
    for n, ((instances, molecules), workers) in peaks.items():
        bound = 4 + 1 + workers
        assert 1 <= instances <= bound, (n, instances, workers)
        assert molecules <= bound * 8, (n, molecules)
    # the bound means something: the epoch of 4N had 100 instances (800 training molecules,
    # checked above, 8 an instance), over 4 times the bound (7 with 2 workers); had they been
    # packed up front, the peak would have been as many


def test_resume_inside_a_streamed_epoch_equals_the_uninterrupted_run(tmp_path, small_chunks):
    """Mid-epoch checkpoints over a plan of many windows: the resumed run re-derives the
    plan from the saved generator state, skips the instances already trained on, and ends
    with the uninterrupted run's parameters, data order and losses."""
    cfg = dict(data="freesolv", epochs=2, hidden=16, molecules_per_instance=8, patience=50,
               schedule="reference", trace=False)
    whole = train(TrainConfig(**cfg), tmp_path / "whole")
    seen = {"epoch": 1, "n": 0}

    class Crash(Exception):
        pass

    def crash(event, **kw):
        if event == "epoch":
            seen["epoch"], seen["n"] = kw["epoch"] + 1, 0
        elif event == "instance" and seen["epoch"] == 2:
            seen["n"] += 1
            if seen["n"] == 45:
                raise Crash()

    with pytest.raises(Crash):
        train(TrainConfig(**cfg, checkpoint_minutes=1e-9), tmp_path / "cut", progress=crash)
    state, _, path = load_checkpoint(tmp_path / "cut")
    assert state["partial"]["position"] == 32
    resumed = train(TrainConfig(), tmp_path / "cut", resume=True)
    a, b = load_model(tmp_path / "whole")[0].state_dict(), load_model(tmp_path / "cut")[0].state_dict()
    for k in a:
        np.testing.assert_array_equal(a[k], b[k], err_msg=k)
    assert resumed["test"] == whole["test"]
    runs = [list(csv.DictReader(open(tmp_path / d / "metrics.csv"))) for d in ("whole", "cut")]
    for x, y in zip(*runs):
        assert x["data_order"] == y["data_order"] and x["train_loss"] == y["train_loss"]
        assert int(x["rows_seen"]) == int(y["rows_seen"]) == whole["split_sizes"]["train"]


def test_val_max_selects_on_a_seeded_sample_and_says_so(tmp_path):
    cfg = dict(data="freesolv", epochs=1, hidden=8, schedule="reference", trace=False)
    capped = train(TrainConfig(**cfg, val_max=20), tmp_path / "capped")
    assert capped["validation"] == {"rows_used": 20, "rows": 64, "val_max": 20, "sampled": True}
    assert capped["val"]["freesolv"]["n"] == 20
    again = train(TrainConfig(**cfg, val_max=20), tmp_path / "again")
    assert again["val"] == capped["val"]                            # the same sample
    whole = train(TrainConfig(**cfg, val_max=1000), tmp_path / "whole")
    assert whole["validation"]["sampled"] is False and whole["val"]["freesolv"]["n"] == 64
    assert whole["test"] == capped["test"]                  # one epoch: the same model
    with pytest.raises(SettingsError, match="--val-max"):
        TrainConfig(val_max=0)


def _rss_file_kib() -> int:
    with open("/proc/self/status") as f:
        return next(int(line.split()[1]) for line in f if line.startswith("RssFile"))


def test_predictions_in_blocks_are_those_of_one_pass(esol):
    from molpipe.training.engines import gather_predictions
    from molpipe.training.session import Session
    from molpipe.training.stream import predict_plan

    session = Session(TrainConfig(data="esol", hidden=8, schedule="reference"))
    session.fit_scaling()
    network = session.network()
    rows = session.split["test"]
    plan = epoch_plan(esol, rows, 8, None, 5, chunk=20, window=2)
    with session.engine(network, session.optimizers(network)) as engine:
        P = predict_plan(engine, esol, plan, rows, 1, block=3)
        whole = engine.predict(list(plan.instances(esol)))
    expected = gather_predictions(whole.preds, {k: np.searchsorted(rows, plan.rows_of(k))
                                                for k in whole.preds}, len(rows), 1)
    assert np.isfinite(P).all()
    np.testing.assert_array_equal(P, expected)


class _MappedStore:
    """A store whose molecules are 4 KiB records of a memory-mapped file."""

    def __init__(self, path, n):
        np.save(path, np.ones((n, 512)))
        self.V = np.load(path, mmap_mode="r")
        self.n_rounds, self.has_rings = np.full(n, 2), np.zeros(n, bool)

    def pack(self, rows):
        return type("Inst", (), {"n_mols": len(rows), "x": float(self.V[rows].sum())})()


@pytest.mark.skipif(not hasattr(mmap, "MADV_DONTNEED"), reason="no madvise here")
def test_a_pass_keeps_the_mapped_pages_within_the_budget(tmp_path, monkeypatch):
    """Sparse reads (one record in 16: the kernel maps the pages, or the whole large folio,
    around each one) over a 128 MiB file: within a 16 MiB budget the pass maps at most that
    and one pack's worth more (up to 2 MiB per fault); without one, most of the file."""
    store = _MappedStore(tmp_path / "v.npy", 32768)
    rows = np.arange(0, 32768, 16)

    def peak_growth(budget):
        monkeypatch.setattr(stream, "PAGE_BUDGET", budget)
        release_pages(store)
        base, peak = _rss_file_kib(), 0
        for _ in epoch_plan(store, rows, 4, None, 0).instances(store):
            peak = max(peak, _rss_file_kib() - base)
        return peak

    assert peak_growth(16 << 20) <= (16 + 4 * 2) << 10          # KiB
    assert peak_growth(1 << 40) > 64 << 10


def test_plan_items_say_what_they_hold_before_packing(esol, monkeypatch):
    plan = epoch_plan(esol, np.arange(200), 8, np.random.default_rng(3), 40, chunk=30, window=2)
    items = plan.instances(esol, 2, 9)
    packed = []
    monkeypatch.setattr(type(esol), "pack", lambda self, r, _pack=type(esol).pack:
                        packed.append(len(r)) or _pack(self, r))
    keys, specs, weights = items.instance_keys, items.specs, items.weights
    assert packed == []                                   # nothing packed to know them
    assert keys == list(range(42, 49)) and len(items) == 7
    whole = dict(items)
    assert list(whole) == keys and len(packed) == 7
    for k, spec, w in zip(keys, specs, weights):
        inst = whole[k]
        assert inst.rows.tolist() == spec.tolist()
        assert w == inst.V.shape[0] * (inst.n_rounds + 2)
    packed.clear()
    assert [k for k, _ in items.items([4, 1])] == [keys[4], keys[1]] and len(packed) == 2
