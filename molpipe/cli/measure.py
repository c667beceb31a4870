"""molpipe bench and molpipe simulate: throughput measured, and predicted."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from molpipe.cli import check_placement, console, err_console, fail
from molpipe.data.errors import DataError
from molpipe.training.settings import DEFAULTS


def bench(
    data: Annotated[str, typer.Argument(help="Bundled data set name, CSV/SDF path or graph store.")] = "esol",
    hidden: Annotated[int, typer.Option(help="Hidden size d_h.")] = DEFAULTS.hidden,
    molecules_per_instance: Annotated[Optional[int], typer.Option(
        help="Molecules packed into one instance (default: as train chooses).")] = None,
    max_active_keys: Annotated[int, typer.Option(help="Most instances in flight (mak).")] = DEFAULTS.max_active_keys,
    min_update_frequency: Annotated[int, typer.Option(help="Gradients per update (muf).")] = DEFAULTS.min_update_frequency,
    epochs: Annotated[Optional[int], typer.Option(
        help="Timed passes over the training split (schedules take turns; default 4); with "
             "--to-accuracy, the reference trainer's epochs (default: train's, "
             f"{DEFAULTS.epochs}).", show_default=False)] = None,
    molecules: Annotated[Optional[int], typer.Option(help="Use only the first N training molecules.")] = None,
    replicate: Annotated[int, typer.Option(help="Repeat the training split N times (a larger workload).")] = 1,
    schedule: Annotated[Optional[list[str]], typer.Option(
        help="Schedules to run (repeat; default all): reference, sync (one update per mak "
             "instances), sync-each (one update per muf instances, as often as async), async, "
             "reference-x2 (two reference trainers on two threads: the machine's ceiling); "
             "variants to compare in one run: BASE[field=value,...] with the engine fields "
             "max_active_keys, min_update_frequency, weight_stashing, e.g. "
             "'async[max_active_keys=8,weight_stashing=false]'; async-mak8 (8 in flight), "
             "async-nostash (no weight stashing), async-mak8-nostash.")] = None,
    placement: Annotated[Optional[str], typer.Option(
        help="Stages per worker of the pipeline schedules, as for train.")] = None,
    to_accuracy: Annotated[bool, typer.Option(
        "--to-accuracy", help="Time to accuracy instead of throughput: reference, sync, "
        "sync-each and async (or --schedule's) train the same network from the same seed on "
        "the same instances until the validation error (train's selection metric: RMSE, or "
        "1 - AUC) first reaches --target; each one's training seconds to it (null when a "
        "cap is hit first). --throughput runs the throughput passes too.")] = False,
    target: Annotated[Optional[float], typer.Option(
        help="--to-accuracy: the validation error to reach, in data units (default: the "
             "reference trainer's best over its --epochs, found in the same run).",
        show_default=False)] = None,
    max_epochs: Annotated[Optional[int], typer.Option(
        help="--to-accuracy: most epochs of a schedule (default 2 x --epochs).",
        show_default=False)] = None,
    max_seconds: Annotated[Optional[float], typer.Option(
        help="--to-accuracy: most training seconds of a schedule (default: no cap).",
        show_default=False)] = None,
    throughput: Annotated[Optional[bool], typer.Option(
        "--throughput/--no-throughput", help="Measure molecules/s over --epochs passes "
        "(default: yes, unless --to-accuracy).", show_default=False)] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the results as JSON.")] = False,
    plot: Annotated[Optional[Path], typer.Option(
        help="Write a PNG of the pipeline schedules' timelines of a short pass.")] = None,
) -> None:
    """Training molecules/s of every schedule on the same instances, in one process; with
    --to-accuracy, each schedule's training seconds to a validation error instead.

    Examples: molpipe bench esol --json;
    molpipe bench esol --to-accuracy --schedule reference --schedule 'async[max_active_keys=8]'
    """
    import json

    from molpipe.measure.bench import DEFAULT_SCHEDULES, BenchConfig, bench as run_bench, schedule_settings
    from molpipe.measure.to_accuracy import ACCURACY_SCHEDULES, Goal, check_schedules
    from molpipe.measure.to_accuracy import to_accuracy as run_to_accuracy
    from molpipe.cli.display import utilization_table

    schedules = tuple(schedule or (ACCURACY_SCHEDULES if to_accuracy else DEFAULT_SCHEDULES))
    throughput = (not to_accuracy) if throughput is None else throughput
    try:
        for s in schedules:
            schedule_settings(s)
        if to_accuracy:
            check_schedules(schedules)
            goal = Goal(epochs=epochs or DEFAULTS.epochs, target=target, max_epochs=max_epochs,
                        max_seconds=max_seconds)
    except ValueError as err:
        fail(str(err))
    if not to_accuracy and (target, max_epochs, max_seconds) != (None, None, None):
        fail("--target, --max-epochs and --max-seconds are options of --to-accuracy")
    if not (throughput or to_accuracy):
        fail("--no-throughput without --to-accuracy leaves nothing to measure")
    if len(set(schedules)) != len(schedules):
        fail("a schedule is named twice")
    check_placement(placement)
    passes = 4 if to_accuracy or epochs is None else epochs
    config = BenchConfig(data=data, hidden=hidden, molecules_per_instance=molecules_per_instance,
                         max_active_keys=max_active_keys, min_update_frequency=min_update_frequency,
                         epochs=passes, molecules=molecules, replicate=replicate, schedules=schedules,
                         placement=placement,
                         plot=str(plot) if plot else None)
    status = err_console.status("benchmarking", spinner="dots")
    status.start()
    result = {}
    try:
        if throughput:
            result = run_bench(config, progress=lambda event, **kw: status.update(
                f"{kw['schedule']}: pass {kw['epoch']}/{passes} took {kw['seconds']:.2f} s"))
        if to_accuracy:
            acc = run_to_accuracy(config, goal, progress=lambda event, **kw: status.update(
                f"to accuracy, {kw['schedule']}: epoch {kw['epoch']} took {kw['seconds']:.2f} s,"
                f" validation error {kw['val_error']:.4g}"))
            result["to_accuracy"] = acc["to_accuracy"]
            result.setdefault("settings", acc["settings"])
    except (DataError, ValueError) as err:
        status.stop()
        fail(str(err))
    status.stop()
    if json_out:
        print(json.dumps(result, indent=2))
        return
    if to_accuracy:
        console.print(accuracy_table(data, result["to_accuracy"]))
    if not throughput:
        return
    table = Table(title=f"molpipe bench {data} (hidden {hidden}, "
                        f"{result['settings']['molecules_per_instance']} mol/instance, "
                        f"mak {max_active_keys}, muf {min_update_frequency})")
    for column in ("schedule", "instances/update", "molecules/s", "× reference", "async ×", "seconds"):
        table.add_column(column, justify="right")
    asy = result.get("async", {}).get("molecules_per_second")
    for name in schedules:
        r = result[name]
        per_update = r.get("instances_per_update", min_update_frequency if name != "reference" else 1)
        table.add_row(escape(name), str(per_update), f"{r['molecules_per_second']:,.0f}",
                      f"{r['speedup_vs_reference']:.2f}" if "speedup_vs_reference" in r else "–",
                      f"{asy / r['molecules_per_second']:.2f}" if asy else "", f"{r['seconds']:.2f}")
    console.print(table)
    for name in schedules:
        if result[name].get("utilization"):
            console.print(f"[bold]{escape(name)}[/bold] worker utilization")
            console.print(utilization_table(result[name]["utilization"], result[name].get("cpu")))


def accuracy_table(data: str, acc: dict) -> Table:
    """Each schedule's training seconds (and epochs) to the target, or what capped it."""
    target = acc["target"]
    table = Table(title=f"molpipe bench {data} --to-accuracy: validation {acc['metric']} ≤ "
                        f"{'-' if target is None else f'{target:.4g}'} ({acc['target_source']})")
    for column in ("schedule", "seconds to target", "epochs", "× reference", "best", "molecules/s",
                   "eval s"):
        table.add_column(column, justify="right")
    for name, r in acc["schedules"].items():
        if r["seconds_to_target"] is None:
            why = "" if r["stopped_by"].startswith(("max_", "epochs")) else f": {r['stopped_by']}"
            reached = (f"not reached in {r['epochs']} epochs / {r['train_seconds']:.2f} s"
                       f"{why}"[:120])
            epochs = "-"
        else:
            reached, epochs = f"{r['seconds_to_target']:.2f}", str(r["epochs_to_target"])
        speed = r["speedup_vs_reference"]
        table.add_row(escape(name), reached, epochs, "" if speed is None else f"{speed:.2f}",
                      "-" if r["best"] is None else f"{r['best']:.4g}",
                      "-" if r["molecules_per_second"] is None
                      else f"{r['molecules_per_second']:,.0f}", f"{r['eval_seconds']:.2f}")
    return table


def simulate(
    data: Annotated[str, typer.Argument(help="Data set whose stage costs are measured (threads).")] = "qm9",
    workers: Annotated[Optional[list[int]], typer.Option(help="K values (repeat; default 1..64).")] = None,
    max_active_keys: Annotated[int, typer.Option(help="Most instances in flight (mak).")] = DEFAULTS.max_active_keys,
    latency: Annotated[float, typer.Option(help="Seconds a message takes between two workers.")] = 50e-6,
    overhead: Annotated[float, typer.Option(help="Receiver CPU seconds per message (decode).")] = 20e-6,
    molecules_per_instance: Annotated[int, typer.Option(help="Molecules packed into one instance.")] = 16,
    layout: Annotated[str, typer.Option(
        help="stages: K workers, a balanced cut of the stages, a core each; replicas: K fused "
             "replicas of the network, a core each (costs measured on one fused worker); "
             "mpi-replicas: K data-parallel replicas over MPI exchanging parameter deltas "
             "(message costs measured by an MPI ping-pong here).")] = "stages",
    exchange_every: Annotated[int, typer.Option(
        help="mpi-replicas: a stage sends its delta every N of its updates.")] = DEFAULTS.exchange_every,
    cores: Annotated[Optional[int], typer.Option(
        help="mpi-replicas: also predict for this many cores shared by the replicas.")] = None,
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Predict pipeline throughput for K workers from measured stage costs (discrete events).

    Example: molpipe simulate qm9 --max-active-keys 16 --latency 1e-4;
    molpipe simulate qm9 --layout replicas
    """
    from molpipe.measure.simulate import measure_costs, predict_curve, random_paths

    if layout not in ("stages", "replicas", "mpi-replicas"):
        fail(f"unknown layout {layout!r} (choices: stages, replicas, mpi-replicas)")
    ks = tuple(workers or (1, 2, 4, 6, 8, 16, 32, 64))
    if layout == "mpi-replicas":
        return _simulate_mpi(data, ks, max_active_keys, molecules_per_instance, exchange_every,
                             cores, json_out)
    if layout == "replicas":
        from molpipe.measure.sharing import replica_curve

        costs = measure_costs(data, size=molecules_per_instance, layout="fused", max_active_keys=1)
        rows = replica_curve(costs, random_paths(), ks)
    else:
        costs = measure_costs(data, size=molecules_per_instance)
        rows = predict_curve(costs, ks, mak=max_active_keys, latency=latency, overhead=overhead)
    table = Table(title=f"predicted throughput, {data}, {layout}, mak {max_active_keys}, "
                        f"latency {latency:g} s")
    for column in ("workers", "used", "molecules/s", "busiest worker"):
        table.add_column(column, justify="right")
    for r in rows:
        table.add_row(str(r["workers"]), str(r["used"]),
                      f"{r['instances_per_second'] * molecules_per_instance:,.0f}",
                      f"{r['max_utilization']:.0%}")
    console.print(table)


def _simulate_mpi(data: str, ks, mak: int, size: int, every: int, cores, json_out: bool) -> None:
    """``molpipe simulate --layout mpi-replicas``: ``measure.data_parallel``'s curve."""
    import json

    from molpipe.measure import data_parallel as dp
    from molpipe.measure.simulate import measure_costs, random_paths

    costs = measure_costs(data, size=size, layout="fused", max_active_keys=1)
    rate1 = dp.replica_rate(costs, random_paths(), mak=mak)
    message = dp.measure_pingpong()
    source = "MPI ping-pong, 2 ranks here"
    wire = dp.wire_costs()
    if message is None:
        source = "wire frame encode/decode (no mpi4py/mpiexec: no ping-pong)"
        message = {"latency": wire["pack"][0] + wire["apply"][0],
                   "per_byte": wire["pack"][1] + wire["apply"][1]}
    curves = {"own_core": dp.data_parallel_curve(rate1, costs.param_bytes, message, wire, ks,
                                                 every=every)}
    if cores:
        curves[f"{cores}_cores"] = dp.data_parallel_curve(rate1, costs.param_bytes, message, wire,
                                                          ks, every=every, cores=cores)
    out = {"data": data, "molecules_per_instance": size, "max_active_keys": mak,
           "exchange_every": every, "param_bytes": costs.param_bytes, "message": message,
           "message_source": source, "wire": wire, "replica_instances_per_second": rate1,
           "curves": {k: [{**r, "molecules_per_second": r["instances_per_second"] * size}
                          for r in rows] for k, rows in curves.items()}}
    if json_out:
        console.print_json(json.dumps(out))
        return
    table = Table(title=f"predicted data-parallel replicas over MPI, {data}: deltas of "
                        f"{sum(costs.param_bytes.values()) / 1e6:.2f} MB every {every} update(s) "
                        f"a stage; messages {message['latency'] * 1e6:.1f} µs + "
                        f"{message['per_byte'] * 1e9:.2f} ns/B ({source})")
    table.add_column("replicas", justify="right")
    for name in curves:
        table.add_column(f"molecules/s ({name.replace('_', ' ')})", justify="right")
    table.add_column("speed-up", justify="right")
    table.add_column("exchange share", justify="right")
    own = out["curves"]["own_core"]
    for i, r in enumerate(own):
        table.add_row(str(r["replicas"]), *[f"{out['curves'][n][i]['molecules_per_second']:,.0f}"
                                            for n in curves],
                      f"{r['speedup']:.2f}", f"{r['exchange_share']:.0%}")
    console.print(table)


def compare_table(rows: list[dict]) -> Table:
    """Runs (or replicate sets, as mean ± SD) side by side."""
    tasks = {r.get("task", "regression") for r in rows}
    keys = [k for k in ("rmse", "mae", "r2", "auc", "prc_auc")
            if any(f"test_{k}" in r for r in rows)]
    table = Table("run", "data", "split", "runs", *keys, "train mol/s",
                  title="test metrics (validation: --json)" if len(tasks) == 1
                  else "test metrics, mixed tasks (validation: --json)")

    def cell(r: dict, key: str, fmt: str = ".4g") -> str:
        v, sd = r.get(key), r.get(f"{key}_sd")
        if v is None:
            return "-"
        if sd is not None and r.get("runs", 1) > 1:
            return f"{v:{fmt}} ± {sd:{fmt if ',' in fmt else '.2g'}}"
        return f"{v:{fmt}}"

    for r in rows:
        table.add_row(Path(r["run"]).name, str(r.get("dataset")), str(r.get("split")),
                      str(r.get("runs", 1)), *[cell(r, f"test_{k}") for k in keys],
                      cell(r, "train_molecules_per_second", ",.0f"))
    return table


def compare(
    runs: Annotated[list[Path], typer.Argument(
        help="Run directories (molpipe train) or replicate sets (train --replicates).",
        show_default=False)],
    json_out: Annotated[bool, typer.Option("--json", help="Print the rows as JSON.")] = False,
) -> None:
    """Runs side by side: test and validation metrics (mean ± SD of a replicate set), speed.

    Example: molpipe compare runs/esol runs/esol-bond runs/esol-reps
    """
    import json

    from molpipe.measure.compare import CompareError, row_of

    try:
        rows = [row_of(r) for r in runs]
    except CompareError as err:
        fail(str(err))
    if json_out:
        console.print_json(json.dumps(rows))
    else:
        console.print(compare_table(rows))
