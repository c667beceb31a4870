"""molpipe bench: reference, sync and async schedules of one network on the same instances."""

from __future__ import annotations

import contextlib
import os
import platform
import re
import threading
import time
from dataclasses import asdict, dataclass, replace

import numpy as np

from molpipe.training.result import EpochResult
from molpipe.training.run_dir import versions
from molpipe.training.session import Prepared, Session, make_items
from molpipe.training.settings import DEFAULTS, TrainConfig

SCHEDULES = ("reference", "sync", "sync-each", "async", "reference-x2")
#: what ``molpipe bench`` runs unless told: the schedules, and async in both layouts (its
#: default, replicas, and a worker per stage)
DEFAULT_SCHEDULES = ("reference", "sync", "sync-each", "async-stages", "async", "reference-x2")
# sync: one update per group of max_active_keys instances (a group fills the pipeline, drains);
# sync-each: one update per min_update_frequency instances, as often as async updates, so
# nothing can overlap an update (the pipeline holds one group at a time).
# reference-x2: two reference trainers at once, each on its own thread and network, over the
# same instances: what two threads of this machine make of the same work, GIL included (the
# ceiling of any pipeline on two cores).
# variants, for comparisons within one run: BASE[field=value,...] sets engine fields (those of
# ENGINE_FIELDS) of a schedule, e.g. "async[max_active_keys=8,weight_stashing=false]"; the
# short names "async-mak8" (8 in flight instead of --max-active-keys), "async-nostash" (no
# weight stashing) and "async-mak8-nostash" are the same as their bracket forms, as are the
# layout suffixes "async-stages" (a worker per stage), "async-fused" (one worker for every
# stage) and "async-replicas" (two fused replicas on shared parameters; "async-replicas3":
# three); plain "async" is the run's default layout (auto: replicas).
_SHORT = re.compile(r"async(?:-mak(?P<mak>[1-9][0-9]*))?(?P<nostash>-nostash)?"
                    r"(?:-(?P<layout>stages|fused|replicas)(?P<replicas>[1-9][0-9]*)?)?")
_NAME = re.compile(r"(?P<base>[^\[\]]+)(?:\[(?P<fields>[^\[\]]*)\])?")

#: the engine fields (``Session.engine`` keywords) a schedule variant may set, with their types
ENGINE_FIELDS = (
    ("max_active_keys", int),
    ("min_update_frequency", int),
    ("weight_stashing", bool),
    ("layout", str),                  # stages, fused, replicas (molpipe.runtime.replicas)
    ("replicas", int),
    ("update_criterion", str),        # count, atoms:N, gradnorm:X[:MAXN], backlog:MAXN
    ("admission", str),               # instances, atoms:N
    ("weight_prediction", bool),
)


def _field_value(name: str, kind: type, text: str):
    """``text`` as a value of field ``name`` (ints: counts of at least 1; bools: true/false)."""
    if kind is bool:
        v = {"true": True, "1": True, "yes": True, "false": False, "0": False, "no": False}
        if text.lower() not in v:
            raise ValueError(f"{name}={text!r}: give true or false")
        return v[text.lower()]
    if kind is int:
        if not text.isdigit() or int(text) < 1:
            raise ValueError(f"{name}={text!r}: give an integer of at least 1")
        return int(text)
    return kind(text)


def schedule_settings(name: str) -> dict:
    """A schedule name's ``kind`` (reference, sync or async), ``copies`` (2 for
    reference-x2), ``each`` (sync-each: one update per min_update_frequency instances) and
    ``engine``: the engine fields the name sets (the rest are the run's settings).

    ValueError listing the choices for an unknown schedule or field, or a bad value.
    """
    m = _NAME.fullmatch(name.strip())
    base = m["base"] if m else name
    engine = {}
    short = _SHORT.fullmatch(base)
    if short is not None and base != "async":
        if short["mak"]:
            engine["max_active_keys"] = int(short["mak"])
        if short["nostash"]:
            engine["weight_stashing"] = False
        if short["layout"]:
            engine["layout"] = short["layout"]
        if short["replicas"]:
            engine["replicas"] = int(short["replicas"])
        base = "async"
    if m is None or base not in SCHEDULES:
        raise ValueError(f"unknown schedule {name!r} (choose from {', '.join(SCHEDULES)}; "
                         "variants: BASE[field=value,...], e.g. async[max_active_keys=8], "
                         "or async-mak8, async-nostash, async-mak8-nostash)")
    types = dict(ENGINE_FIELDS)
    for part in filter(None, (p.strip() for p in (m["fields"] or "").split(","))):
        field, eq, text = (s.strip() for s in part.partition("="))
        if field not in types:
            raise ValueError(f"{name!r}: unknown engine field {field!r} "
                             f"(choose from {', '.join(types)})")
        if not eq:
            raise ValueError(f"{name!r}: {field!r} has no value (write {field}=VALUE)")
        engine[field] = _field_value(field, types[field], text)
    return {"kind": base.removesuffix("-each").removesuffix("-x2"), "engine": engine,
            "copies": 2 if base == "reference-x2" else 1, "each": base == "sync-each"}


def engine_fields(config, settings: dict) -> dict:
    """The fields of ``ENGINE_FIELDS`` the schedule sets (``settings['engine']``), and
    ``config``'s value of every other one it has (the rest: ``Session.engine``'s own)."""
    return {f: settings["engine"][f] if f in settings["engine"] else getattr(config, f)
            for f, _ in ENGINE_FIELDS if f in settings["engine"] or hasattr(config, f)}


class _TwoReferences:
    """Two reference engines trained side by side on two threads (``reference-x2``)."""

    copies = 2

    def __init__(self, engines: list):
        self.engines = engines

    def train(self, items):
        errors = []

        def run(engine):
            try:
                engine.train(items)
            except BaseException as err:        # noqa: BLE001 - re-raised below
                errors.append(err)

        threads = [threading.Thread(target=run, args=(e,)) for e in self.engines]
        t0 = time.perf_counter()
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        if errors:
            raise errors[0]
        return EpochResult(seconds=time.perf_counter() - t0)


@dataclass
class BenchConfig:
    """Settings of one benchmark (printed with the results)."""

    data: str = "esol"
    hidden: int = DEFAULTS.hidden
    molecules_per_instance: int | None = None   # None: as train chooses (auto_instance_size)
    max_active_keys: int = DEFAULTS.max_active_keys
    min_update_frequency: int = DEFAULTS.min_update_frequency
    weight_stashing: bool = DEFAULTS.weight_stashing
    epochs: int = 4                   # timed passes, the schedules taking turns
    molecules: int | None = None      # first N training molecules (None: the whole split)
    replicate: int = 1                # repeat the training set (a larger workload)
    schedules: tuple[str, ...] = DEFAULT_SCHEDULES
    seed: int = DEFAULTS.seed
    dtype: str = DEFAULTS.dtype
    placement: str | None = None      # pipeline stage placement (default: a worker per stage)
    plot: str | None = None           # PNG of the sync and async timelines of a short pass
    plot_instances: int = 12

    def settings(self) -> TrainConfig:
        """The run settings the benchmarked network and engines are built from (the rest of
        ``molpipe train``'s defaults)."""
        return TrainConfig(data=self.data, seed=self.seed, hidden=self.hidden, dtype=self.dtype,
                           molecules_per_instance=self.molecules_per_instance,
                           max_active_keys=self.max_active_keys,
                           min_update_frequency=self.min_update_frequency,
                           weight_stashing=self.weight_stashing, placement=self.placement,
                           trace=False)


def bench(config: BenchConfig, progress=None) -> dict:
    """Train each schedule ``epochs`` times over the same instances; molecules/s per schedule.

    The network, its scaling and its optimizers are ``molpipe train``'s own (one ``Session``
    of the bench's settings), so the figures are those of the network a run trains.
    """
    emit = progress or (lambda event, **kw: None)
    session = Session(config.settings())
    prep: Prepared = session.prep
    rows = prep.split["train"]
    if config.molecules:
        rows = rows[: config.molecules]
    rows = np.sort(np.tile(rows, config.replicate))
    session.fit_scaling()
    if not config.molecules_per_instance:
        config = replace(config, molecules_per_instance=session.instance_size())
    epochs_items = []
    key = 0
    rng = np.random.default_rng(config.seed)
    for _ in range(config.epochs):
        items, _, key = make_items(prep, rows, config.molecules_per_instance, rng, key)
        epochs_items.append(items)
    warm, _, key = make_items(prep, rows[: 4 * config.molecules_per_instance],
                              config.molecules_per_instance, None, key)
    results, traces = {}, {}
    with contextlib.ExitStack() as stack:
        engines = {}
        for schedule in config.schedules:
            settings = schedule_settings(schedule)
            kind, fields = settings["kind"], engine_fields(config, settings)
            sync_group = fields["min_update_frequency"] if settings["each"] else None
            copies = []
            for _ in range(settings["copies"]):
                network = session.network()
                copies.append(stack.enter_context(session.engine(
                    network, session.optimizers(network), schedule=kind, sync_group=sync_group,
                    trace=bool(config.plot), **fields)))
            engine = copies[0] if len(copies) == 1 else _TwoReferences(copies)
            engine.train(warm)                      # compile / warm the kernels first
            engines[schedule] = engine
            results[schedule] = {"molecules_per_second": 0.0, "seconds": 0.0, "molecules": 0,
                                 "passes": []}
            if kind != "reference":
                results[schedule].update(max_active_keys=fields["max_active_keys"],
                                         weight_stashing=fields["weight_stashing"],
                                         in_flight_max=0)
            if kind == "sync":
                results[schedule]["instances_per_update"] = sync_group or fields["max_active_keys"]
        # the schedules take turns pass by pass (in a rotating order), so that a slow spell
        # of a shared machine falls on all of them alike
        # per schedule, "utilization" and "cpu": worker -> fraction x seconds, summed over passes
        shares = {name: {"utilization": {}, "cpu": {}} for name in engines}
        names = list(engines)
        for e, items in enumerate(epochs_items):
            n = sum(inst.n_mols for _, inst in items)
            for schedule in names[e % len(names):] + names[: e % len(names)]:
                res = engines[schedule].train(items)
                r = results[schedule]
                done = n * getattr(engines[schedule], "copies", 1)
                r["molecules"] += done
                r["seconds"] += res.seconds
                r["passes"].append(done / res.seconds)
                if "in_flight_max" in r:
                    r["in_flight_max"] = max(r["in_flight_max"], res.in_flight_max)
                for what, fractions in (("utilization", res.utilization), ("cpu", res.cpu)):
                    total = shares[schedule][what]
                    for w, f in fractions.items():
                        total[w] = total.get(w, 0.0) + f * res.seconds
                emit("epoch", schedule=schedule, epoch=e + 1, seconds=res.seconds)
        for schedule, r in results.items():
            r["molecules_per_second"] = r["molecules"] / r["seconds"]
            for what, total in shares[schedule].items():
                if total:
                    r[what] = {w: v / r["seconds"] for w, v in total.items()}
            if config.plot and "in_flight_max" in r:     # a short pass to draw, after timing
                engines[schedule].train(epochs_items[0][: config.plot_instances])
                traces[schedule] = {"entries": engines[schedule].trace(),
                                    "workers": engines[schedule].worker_names}
    if traces:
        from molpipe.measure.timeline import plot_timelines

        plot_timelines(traces, config.plot, title=(
            f"{config.data}: {config.plot_instances} instances of {config.molecules_per_instance} "
            f"molecules, mak {config.max_active_keys} (colour: instance)"))
    ref = results.get("reference", {}).get("molecules_per_second")
    for r in results.values():
        if ref:
            r["speedup_vs_reference"] = r["molecules_per_second"] / ref
    if "async" in results:
        for name in results:
            if name not in ("async", "reference"):
                results["async"][f"speedup_vs_{name}"] = (results["async"]["molecules_per_second"]
                                                          / results[name]["molecules_per_second"])
    return {**results, "settings": {**asdict(config), "cores": os.cpu_count(),
                                    "machine": platform.machine(), "versions": versions()}}
