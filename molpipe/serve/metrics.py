"""What a service reports: ``status`` (the /status document) and ``prometheus_text`` (/metrics)."""

from __future__ import annotations

import math
import threading
import time
from collections import deque

import numpy as np


class Requests:
    """Counts and latencies of answered requests per route (the last 2,048 of each)."""

    def __init__(self, keep: int = 2048):
        self._lock = threading.Lock()
        self.count: dict[str, int] = {}
        self.molecules: dict[str, int] = {}
        self.latency: dict[str, deque] = {}
        self.keep = keep

    def add(self, route: str, seconds: float, molecules: int = 0) -> None:
        with self._lock:
            self.count[route] = self.count.get(route, 0) + 1
            self.molecules[route] = self.molecules.get(route, 0) + molecules
            self.latency.setdefault(route, deque(maxlen=self.keep)).append(seconds)

    def summary(self) -> dict:
        with self._lock:
            out = {}
            for route, n in self.count.items():
                lat = np.array(self.latency[route])
                out[route] = {"requests": n, "molecules": self.molecules[route],
                              **{f"p{q}_ms": round(float(np.percentile(lat, q)) * 1e3, 2)
                                 for q in (50, 90, 99)}}
            return out


def _clean(x):
    """``x`` with NaN and inf as None (JSON has neither)."""
    if isinstance(x, float):
        return x if math.isfinite(x) else None
    if isinstance(x, dict):
        return {k: _clean(v) for k, v in x.items()}
    if isinstance(x, (list, tuple)):
        return [_clean(v) for v in x]
    if isinstance(x, np.generic):
        return _clean(x.item())
    return x


def status(model) -> dict:
    """Model version, training progress, rows observed / folded / pending / rejected, the
    prequential error and its curve, validation over time, workers and requests."""
    live, names, pre = model.live, model.engine.worker_names, model.prequential
    return _clean({
        "model_version": live.version, "targets": model.targets, "task": model.task,
        "training": model.training, "error": model.error,
        "instances_trained": live.n_trained, "molecules_trained": model.n_mols_trained,
        "instances_evaluated": live.n_evaluated, "epochs": model.epochs,
        "train_loss": model.train_loss,
        "rows": {"observed": model.journal.last_seq, "folded": len(model.folded),
                 "pending": model.journal.last_seq - len(model.folded),
                 "rejected": model.journal.n_rejected, "pool": len(model.pool_graphs)},
        "prequential": {"metric": pre.metric, "window": pre.window, "n": len(pre),
                        "last": pre.error(), "curve": pre.curve[-500:]},
        "validation": model.history[-500:],
        "utilization": {names.get(w, str(w)): round(u, 4) for w, u in live.utilization.items()},
        "in_flight": dict(live.in_flight), "snapshots": model.n_snapshots,
        "requests": model.requests.summary(),
        "uptime_seconds": round(time.time() - model.t_start, 1),
    })


def prometheus_text(st: dict) -> str:
    """The /status document as Prometheus text exposition (version 0.0.4)."""
    lines: list[str] = []

    def metric(name: str, kind: str, help_: str, samples) -> None:
        lines.append(f"# HELP molpipe_{name} {help_}")
        lines.append(f"# TYPE molpipe_{name} {kind}")
        for labels, value in samples:
            if value is None:
                continue
            tag = "{" + ",".join(f'{k}="{v}"' for k, v in labels.items()) + "}" if labels else ""
            lines.append(f"molpipe_{name}{tag} {float(value):.10g}")

    metric("model_version", "gauge", "Newest published parameter version.",
           [({}, st["model_version"])])
    metric("instances_trained_total", "counter", "Training instances completed.",
           [({}, st["instances_trained"])])
    metric("molecules_trained_total", "counter", "Molecules trained on (replays included).",
           [({}, st["molecules_trained"])])
    metric("rows", "gauge", "Observed rows by state.",
           [({"state": k}, v) for k, v in st["rows"].items()])
    metric("prequential_error", "gauge",
           f"Prequential {st['prequential']['metric']} over the last "
           f"{st['prequential']['window']} observed rows.",
           [({"target": t}, v) for t, v in st["prequential"]["last"].items()])
    metric("worker_utilization", "gauge", "Busy fraction of each worker.",
           [({"worker": w}, u) for w, u in st["utilization"].items()])
    metric("in_flight", "gauge", "Instances in the pipeline.",
           [({"kind": k}, v) for k, v in st["in_flight"].items()])
    metric("training", "gauge", "1 while training runs.", [({}, int(st["training"]))])
    req = st.get("requests", {})
    metric("requests_total", "counter", "Requests answered.",
           [({"route": r}, s["requests"]) for r, s in req.items()])
    metric("request_latency_ms", "gauge", "Latency percentiles of recent requests.",
           [({"route": r, "quantile": q[1:-3]}, s[q]) for r, s in req.items()
            for q in ("p50_ms", "p90_ms", "p99_ms")])
    return "\n".join(lines) + "\n"
