"""Runtime benchmark on synthetic dense stages: throughput and utilization against mak.

``python -m molpipe.runtime.bench --n 300 --d 384 --stages 4 --mak 1 2 4 8``
prints instances/s and per-worker utilization for each max_active_keys (and the
sequential reference's time), and with ``--trace out.json`` writes the last timeline.
"""

from __future__ import annotations

import argparse
import time

import numpy as np

from molpipe.kernels import one_blas_thread
from molpipe.runtime.stage import Stage
from molpipe.runtime.pipeline import Pipeline


class Dense(Stage):
    """h = tanh(W h0): a BLAS matrix product per call (releases the GIL)."""

    def forward(self, key, step, x, inst, train):
        h0 = x["h"] if "h" in x else inst
        h = np.tanh(self.params["W"] @ h0)
        if train:
            self.save(key, step, (h0, h))
        return {"h": h}

    def backward(self, key, step, dy, inst):
        h0, h = self.pop(key, step)
        da = dy["h"] * (1.0 - h * h)
        self.grads["W"] += da @ h0.T
        return {"h": self.params["W"].T @ da}


class SquareLoss(Stage):
    """loss = mean(h^2) / 2."""

    def forward(self, key, step, x, inst, train):
        h = x["h"]
        if train:
            self.save(key, step, h)
        return {"loss": np.array([0.5 * np.mean(h * h)]), "pred": h[:1, :1]}

    def backward(self, key, step, dy, inst):
        h = self.pop(key, step)
        return {"h": h / h.size}


class SGD:
    def __init__(self, params, lr=1e-3):
        self.params, self.lr = params, lr

    def step(self, grads, scale):
        for k, p in self.params.items():
            p -= self.lr * scale * grads[k]


def make(n_stages: int, d: int, seed: int = 0):
    """``n_stages`` dense stages then a loss stage, chained by a route function."""
    rng = np.random.default_rng(seed)
    names = [f"dense{i}" for i in range(n_stages)] + ["loss"]
    stages = {s: Dense({"W": rng.normal(scale=d ** -0.5, size=(d, d))}) for s in names[:-1]}
    stages["loss"] = SquareLoss({})
    nxt = dict(zip(names, names[1:]))
    route = lambda s, t, inst: (nxt[s], 0) if s in nxt else None  # noqa: E731
    return stages, {s: SGD(st.params) for s, st in stages.items()}, route, names


def sequential(stages, opts, route, first, items) -> float:
    """Seconds the sequential reference trainer takes on ``items``."""
    t0 = time.perf_counter()
    with one_blas_thread():
        for key, inst, _ in items:
            at, x, path = (first, 0), {}, []
            while at is not None:
                x = stages[at[0]].forward(key, at[1], x, inst, True)
                path.append(at)
                at = route(*at, inst)
            dy = {}
            for s, t in reversed(path):
                dy = stages[s].backward(key, t, dy, inst)
            for s, _ in path:
                opts[s].step(stages[s].grads, 1.0)
                stages[s].zero_grad()
    return time.perf_counter() - t0


def main(argv=None) -> None:
    ap = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    ap.add_argument("--n", type=int, default=300, help="instances per run")
    ap.add_argument("--d", type=int, default=384, help="width of every dense stage")
    ap.add_argument("--cols", type=int, default=32, help="columns of every instance")
    ap.add_argument("--stages", type=int, default=4, help="dense stages before the loss")
    ap.add_argument("--mak", type=int, nargs="+", default=[1, 2, 4, 8])
    ap.add_argument("--muf", type=int, default=1)
    ap.add_argument("--repeat", type=int, default=3, help="report the best of this many runs")
    ap.add_argument("--switch", type=float, default=None,
                    help="GIL switch interval of the thread backend (default: its own)")
    ap.add_argument("--trace", default=None, help="write the last run's timeline here")
    a = ap.parse_args(argv)
    rng = np.random.default_rng(1)
    items = [(k, rng.normal(size=(a.d, a.cols)), True) for k in range(a.n)]
    stages, opts, route, names = make(a.stages, a.d)
    sequential(stages, opts, route, names[0], items[:20])  # warm up
    t_seq = min(sequential(stages, opts, route, names[0], items) for _ in range(a.repeat))
    print(f"sequential reference: {a.n / t_seq:8.1f} inst/s")
    for mak in a.mak:
        stages, opts, route, names = make(a.stages, a.d)
        with Pipeline(stages, opts, route, names[0], max_active_keys=mak,
                      min_update_frequency=a.muf, trace=bool(a.trace)) as p:
            if a.switch is not None:
                p.backend.switch_interval = a.switch
            p.run(items[:20])
            res = min((p.run(items) for _ in range(a.repeat)), key=lambda r: r.wall)
            util = " ".join(f"{u:.2f}" for u in res.utilization.values())
            print(f"async mak={mak:<3d}: {a.n / res.wall:8.1f} inst/s  "
                  f"speedup {t_seq / res.wall:4.2f}  utilization [{util}]")
            if a.trace:
                p.write_trace(a.trace)


if __name__ == "__main__":
    main()
