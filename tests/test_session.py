"""The session builder's scaling fit, streamed through the store in chunks."""

import numpy as np
import pytest

from molpipe.data.scaling import additive_baseline, summed_features
from molpipe.training import session as session_mod
from molpipe.training.session import Session
from molpipe.training.settings import TrainConfig


@pytest.mark.parametrize("chunk", [7, 100_000])
def test_the_streamed_scaling_fit_is_the_fit_over_every_graph(monkeypatch, chunk):
    """QM9's u0 (carried by the baseline) and gap (not): the baseline, r2, centre and scale
    fitted chunk by chunk are those of the summed features of all the training graphs."""
    monkeypatch.setattr(session_mod, "SCALING_CHUNK", chunk)
    config = TrainConfig(data="qm9", targets=["u0", "gap"], limit=600)
    session = Session(config)
    got = session.fit_scaling()
    store, rows = session.store, session.split["train"]
    S = summed_features(store.graphs(rows))
    Y = store.targets[rows].astype(np.float64)
    ref = additive_baseline(S, Y, "regression")
    assert got.baseline["used"] == ["u0"] and got.baseline["train_r2"]["u0"] > 0.99
    np.testing.assert_allclose(got.atom_ref[:, 0], ref[:, 0], rtol=1e-7, atol=1e-9)
    assert not got.atom_ref[:, 1].any()                       # gap: not carried, zeroed
    left = Y[:, 0] - S @ ref[:, 0]
    np.testing.assert_allclose(got.mean, [left.mean(), Y[:, 1].mean()], rtol=1e-6)
    np.testing.assert_allclose(got.std, [left.std(), Y[:, 1].std()], rtol=1e-6)
