"""What `molpipe train` prints: metrics in the target's units, early stopping, quiet and
plain (not a terminal) output, the first-run compile note."""

import io

from rich.console import Console

from molpipe.cli.display import TrainDisplay
from molpipe.training.settings import TrainConfig
from molpipe.training.train import train


def display(quiet=False, terminal=False):
    buf = io.StringIO()
    console = Console(file=buf, force_terminal=terminal, width=100)
    d = TrainDisplay(console=console, quiet=quiet)
    d.err_console = Console(file=buf, width=100)
    return d, buf


def epoch(n, **kw):
    return dict(epoch=n, train_loss=0.5, val_score=0.3, train_molecules_per_second=1234.0,
                in_flight_max=4, utilization={}, **kw)


def start(**kw):
    return dict(epochs=3, n_train=8, n_val=1, n_test=1, parameters=10, first_epoch=0, **kw)


def test_off_a_terminal_each_epoch_is_one_plain_line_in_the_targets_units():
    d, buf = display()
    d("start", **start(task="regression", units={"logS": "log10(mol/L)"}))
    d("epoch", **epoch(1, val_summary={"rmse": 0.61234, "mae": 0.4, "r2": 0.9}))
    lines = buf.getvalue().splitlines()
    assert lines[-1] == ("epoch 1/3 · train loss 0.5000 · val RMSE 0.6123 log10(mol/L) · "
                         "1,234 mol/s · 4 in flight")
    assert "\x1b[" not in buf.getvalue()               # no live frame, no escape codes


def test_classification_shows_roc_auc_and_early_stopping_is_said_even_when_quiet():
    d, buf = display()
    d("start", **start(task="classification"))
    d("epoch", **epoch(1, val_summary={"auc": 0.8512, "prc_auc": 0.5}))
    assert "val ROC-AUC 0.8512" in buf.getvalue()
    q, qbuf = display(quiet=True)
    q("start", **start(task="regression"))
    q("epoch", **epoch(1, val_summary={"rmse": 1.0}))
    q("stopped", epoch=40, patience=20, best_epoch=20)
    assert qbuf.getvalue() == ("stopped at epoch 40: no better validation for 20 epochs; "
                               "best epoch 20\n")


def test_quiet_still_prints_the_final_metrics(tmp_path):
    d, buf = display(quiet=True)
    train(TrainConfig(data="freesolv", epochs=1, hidden=8, schedule="reference",
                      cache_root=str(tmp_path / "c")), tmp_path / "run", progress=d)
    out = buf.getvalue()
    assert "RMSE" in out and "kcal/mol" in out and "1 epoch in" in out
    assert "epoch 1/1" not in out                      # nothing live, nothing per epoch


def test_the_first_run_says_it_compiles(tmp_path, monkeypatch):
    import molpipe.training.train

    monkeypatch.setattr(molpipe.training.train, "kernels_cached", lambda: False)
    said = []
    train(TrainConfig(data="freesolv", epochs=1, hidden=8, schedule="reference",
                      cache_root=str(tmp_path / "c")), tmp_path / "run",
          progress=lambda event, **kw: said.append(kw.get("message")) if event == "preprocess" else None)
    assert "compiling kernels (first run only)…" in said
