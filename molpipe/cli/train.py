"""molpipe train: every option in its panel, checked before any work (``TrainConfig``), a
settings file read with --config, the run directory rule, the live display."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape

from molpipe.cli import check_placement, console, err_console, fail
from molpipe.data.errors import DataError
from molpipe.training.settings import DEFAULTS, SPLITS


def _default_run_dir(data: str) -> Path:
    """runs/<data set name>."""
    stem = Path(data).stem if Path(data).suffix else Path(data).name
    return Path("runs") / (stem or "run")


def _free_run_dir(out: Path) -> Path:
    """``out`` if it is absent or empty, else the first free ``out-N`` (N = 2, 3, ...)."""
    n, free = 1, out
    while free.exists() and any(free.iterdir()):
        n += 1
        free = out.with_name(f"{out.name}-{n}")
    return free


def _choices(*values: str):
    """Shell completion of an option's values (``molpipe --install-completion``)."""
    return lambda incomplete: [v for v in values if v.startswith(incomplete)]


_DATA, _MODEL, _TRAIN, _PIPE, _RUN = "Data", "Model", "Training", "Pipeline", "Run directory"


def _opt(help: str, panel: str, *names: str, values: tuple[str, ...] = ()) -> typer.models.OptionInfo:
    return typer.Option(*names, help=help, rich_help_panel=panel,
                        autocompletion=_choices(*values) if values else None)


def train(
    ctx: typer.Context,
    data: Annotated[Optional[str], typer.Argument(
        help="A bundled set (molpipe datasets), a CSV/SDF file or a store.",
        show_default=False)] = None,
    target: Annotated[Optional[list[str]], _opt(
        "Target column; repeat for several (default: the set's, else every numeric "
        "column).", _DATA)] = None,
    smiles_column: Annotated[Optional[str], _opt("SMILES column of a CSV.", _DATA)] = None,
    task: Annotated[Optional[str], _opt(
        "regression or classification (default: from the targets).", _DATA,
        values=("regression", "classification"))] = None,
    split: Annotated[str, _opt(
        "random, scaffold (first fit), scaffold-balanced (scaffolds spread over the parts), "
        "stratified (by class; regression: by deciles), kmeans (clusters of Morgan "
        "fingerprints), or a JSON file of train/val/test rows.", _DATA,
        values=SPLITS)] = DEFAULTS.split,
    split_column: Annotated[Optional[str], _opt(
        "A column of the data file saying train, val or test per row: that split.",
        _DATA)] = None,
    seed: Annotated[int, _opt("Seed of split, initialization and data order.", _DATA)] = DEFAULTS.seed,
    hidden: Annotated[int, _opt("Hidden size.", _MODEL)] = DEFAULTS.hidden,
    rounds: Annotated[int, _opt("Most propagation rounds per molecule.", _MODEL)] = DEFAULTS.max_rounds,
    aggregation: Annotated[str, _opt(
        "Readout over atoms: mean (intensive), sum, norm (sum/100: extensive), attention, "
        "mean+norm (either kind).", _MODEL,
        values=("mean+norm", "mean", "sum", "norm", "attention"))] = DEFAULTS.aggregation,
    propagate: Annotated[str, _opt(
        "split (atom messages, GRU update) or bond (directed bonds, chemprop's D-MPNN).",
        _MODEL, values=("split", "bond"))] = DEFAULTS.propagate,
    baseline: Annotated[str, _opt(
        "auto, additive or none: a group-contribution fit the network corrects (auto: for "
        "targets it carries >= 90 %).", _MODEL, values=("auto", "additive", "none"))] = DEFAULTS.baseline,
    no_readout_features: Annotated[bool, _opt(
        "The readout reads only the propagated states, not the atoms' input features.",
        _MODEL, "--no-readout-features")] = False,
    dropout: Annotated[float, _opt("Dropout in the readout MLP.", _MODEL)] = DEFAULTS.dropout,
    from_model: Annotated[Optional[str], _opt(
        "Start from this run's model: every parameter that fits is copied; new targets get "
        "a new readout head; scaling and baseline are refitted.", _MODEL)] = None,
    freeze: Annotated[Optional[str], _opt(
        "With --from-model: stages whose parameters stay as copied, e.g. "
        "embed,message,update.", _MODEL)] = None,
    loss: Annotated[str, _opt(
        "Regression loss: mse, or mve (a mean and a variance per target, Gaussian NLL: "
        "predictions with their own SD).", _MODEL, values=("mse", "mve"))] = DEFAULTS.loss,
    epochs: Annotated[int, _opt("Most epochs.", _TRAIN)] = DEFAULTS.epochs,
    patience: Annotated[int, _opt("Stop after this many epochs without a better validation.",
                                  _TRAIN)] = DEFAULTS.patience,
    val_max: Annotated[Optional[int], _opt(
        "Select epochs on a seeded sample of this many validation molecules (default: all; "
        "report.json says which).", _TRAIN)] = None,
    lr: Annotated[float, _opt("Peak learning rate (Adam).", _TRAIN)] = DEFAULTS.lr,
    weight_decay: Annotated[float, _opt("L2 weight decay (Adam).", _TRAIN)] = DEFAULTS.weight_decay,
    average: Annotated[float, _opt(
        "Decay of each stage's parameter average, evaluated and saved (0: none).", _TRAIN)] = DEFAULTS.average,
    target_scaling: Annotated[str, _opt(
        "standard (mean, SD) or robust (median, IQR).", _TRAIN,
        values=("standard", "robust"))] = DEFAULTS.target_scaling,
    schedule: Annotated[str, _opt(
        "async (each worker updates itself), sync or reference (sequential).", _PIPE,
        values=("async", "sync", "reference"))] = DEFAULTS.schedule,
    max_active_keys: Annotated[int, _opt("Most instances in flight (mak).", _PIPE)] = DEFAULTS.max_active_keys,
    min_update_frequency: Annotated[int, _opt(
        "Gradients a worker gathers before it updates (muf).", _PIPE)] = DEFAULTS.min_update_frequency,
    molecules_per_instance: Annotated[Optional[int], _opt(
        "Molecules per instance (default: by atoms, at least 16).", _PIPE)] = None,
    no_weight_stashing: Annotated[bool, _opt(
        "async: a backward uses the current weights, not its forward's.", _PIPE,
        "--no-weight-stashing")] = False,
    weight_prediction: Annotated[bool, _opt(
        "async: forward on weights extrapolated over the updates expected before its "
        "backward (SpecTrain).", _PIPE, "--weight-prediction")] = False,
    update_criterion: Annotated[str, _opt(
        "When a worker updates: count (every muf gradients), atoms:N, gradnorm:X[:MAXN] "
        "or backlog:MAXN.", _PIPE)] = DEFAULTS.update_criterion,
    admission: Annotated[str, _opt(
        "async: instances (mak only) or atoms:N (also at most N atoms in flight).",
        _PIPE)] = DEFAULTS.admission,
    backend: Annotated[str, _opt(
        "thread, or mpi (under mpiexec: rank 0 trains, the others host workers; with "
        "--layout replicas every rank trains a replica on its share of the data).", _PIPE,
        values=("thread", "mpi"))] = DEFAULTS.backend,
    placement: Annotated[Optional[str], _opt(
        "Stages per worker, '/' between workers (README: --placement).",
        _PIPE)] = None,
    layout: Annotated[str, _opt(
        "Workers: stages (one per stage), fused (one for all), replicas (fused copies "
        "sharing parameters) or auto (replicas for async threads).", _PIPE,
        values=("auto", "stages", "fused", "replicas"))] = DEFAULTS.layout,
    replicas: Annotated[Optional[int], _opt(
        "Copies of the layout's workers (--layout replicas: default 2; mpi: the ranks).",
        _PIPE)] = None,
    exchange_every: Annotated[int, _opt(
        "mpi replicas: a stage sends its parameter change every N of its updates.",
        _PIPE)] = DEFAULTS.exchange_every,
    on_nonfinite: Annotated[str, _opt(
        "NaN/inf: stop (an error naming the molecule) or skip the instance.", _PIPE,
        values=("stop", "skip"))] = DEFAULTS.on_nonfinite,
    stall_timeout: Annotated[float, _opt("Seconds without a pipeline message: stalled.",
                                         _PIPE)] = DEFAULTS.stall_timeout,
    out: Annotated[Optional[Path], _opt(
        "Run directory (default: runs/<data>); if it holds a run: the next free <out>-N.",
        _RUN)] = None,
    overwrite: Annotated[bool, _opt("Replace the run directory if it holds a run.", _RUN,
                                    "--overwrite")] = False,
    resume: Annotated[Optional[Path], _opt(
        "Continue this run directory from its last checkpoint.", _RUN)] = None,
    config: Annotated[Optional[Path], _opt(
        "Settings file (a run's config.toml or settings.json, or one written by hand); "
        "options given here override it.", _RUN)] = None,
    checkpoint_minutes: Annotated[Optional[float], _opt(
        "Also checkpoint inside an epoch this many minutes (default: after each epoch).", _RUN)] = None,
    quiet: Annotated[bool, _opt("No live display (warnings and the test table still).", _RUN,
                                "--quiet")] = False,
    ensemble: Annotated[int, _opt(
        "Train this many members (seeds SEED, SEED+1, ...; one split) into OUT/member-i; "
        "predict gives their mean and a <target>_std column.", _RUN)] = DEFAULTS.ensemble,
    ensemble_jobs: Annotated[int, _opt(
        "--ensemble: members trained at the same time, each its own pipeline (1: one "
        "after another).", _RUN)] = DEFAULTS.ensemble_jobs,
    recalibrate: Annotated[bool, _opt(
        "--ensemble or --loss mve: scale σ to fit the validation split's errors (stored "
        "in the model).",
        _RUN, "--recalibrate")] = False,
    test_every_epoch: Annotated[bool, typer.Option(
        "--test-every-epoch", hidden=True,
        help="Benchmarks: also score the test split after every epoch into metrics.csv "
             "(test_<target>_<metric>, and test_seconds: those passes' summed time, which "
             "wall_seconds includes); never selected on.")] = False,
    replicates: Annotated[int, _opt(
        "Train this many runs, seeds SEED, SEED+1, ... (split, initialization, order), into "
        "OUT/seed-N, and summarize them (mean ± SD) in OUT/summary.json.", _RUN)] = 1,
    follow: Annotated[Optional[Path], _opt(
        "Online: train on the rows appended to this CSV as they appear (after DATA's, if "
        "given), each predicted before it is trained on; state in --out.", "Online")] = None,
    follow_idle: Annotated[Optional[float], _opt(
        "--follow: stop after this many seconds without a new row (default: run until "
        "Ctrl-C).", "Online")] = None,
) -> None:
    """Train a model on DATA and write a run directory (model, report.json, metrics.csv, split).

    Example: molpipe train esol --epochs 30 --out runs/esol
    (after a crash: molpipe train --resume runs/esol; online: molpipe train --follow new.csv)
    """
    import shutil

    from molpipe.io.checkpoint import CheckpointError
    from molpipe.cli.display import TrainDisplay, ensemble_summary
    from molpipe.io.model import ModelError
    from molpipe.runtime.control import PipelineError
    from molpipe.runtime.mpi import MPIUnavailable
    from molpipe.training.settings import TrainConfig
    from molpipe.training.train import train as run_training

    def run(settings: TrainConfig, out: Path, resume: bool = False) -> None:
        if settings.ensemble > 1:
            return run_ensemble(settings, out, resume)
        display = TrainDisplay(console=console, quiet=quiet)
        try:
            report = run_training(settings, out, progress=display, resume=resume)
        except (DataError, ModelError, PipelineError, CheckpointError, MPIUnavailable,
                ValueError) as err:
            display.close()
            fail(str(err))
        finally:
            display.close()
        if not report:               # an MPI worker rank (of a resumed run): rank 0 reports
            return
        if report["config"].get("loss") == "mve":        # σ scored (and recalibrated)
            from molpipe.cli.display import calibration_rich_table
            from molpipe.inference.calibrate import calibrate_run

            done = calibrate_run(out, report["config"].get("recalibrate", False))
            scaled = " (σ recalibrated on the validation split)" if done["std_scale"] else ""
            console.print(calibration_rich_table(f"σ on the test split{scaled}",
                                                 done["calibration"]["test"]))
        try:
            from molpipe.measure.plots import plot_run

            plots = plot_run(out)
        except Exception as err:                 # a chart must never lose a finished run
            err_console.print(f"[yellow]warning:[/yellow] plots not written ({escape(str(err))})")
            plots = []
        where = f" · {len(plots)} plots in {out / 'plots'}" if plots else ""
        console.print(f"run directory: [bold]{out}[/bold]{where}")

    def run_ensemble(settings: TrainConfig, out: Path, resume: bool = False) -> None:
        from molpipe.cli.display import EnsembleDisplay
        from molpipe.inference.ensemble import assemble
        from molpipe.training.ensemble import train_members

        display = EnsembleDisplay(settings.ensemble, settings.epochs, console, quiet)
        try:
            done = train_members(settings, out, progress=display, resume=resume)
            report = assemble(out, settings, done["seconds"], done["jobs"])
        except (DataError, ModelError, PipelineError, CheckpointError, ValueError) as err:
            display.close()
            fail(str(err))
        finally:
            display.close()
        console.print(ensemble_summary(report, out))

    if resume is not None:
        from molpipe.training.ensemble import saved_settings

        ensemble_settings = saved_settings(resume)
        if ensemble_settings is not None:
            run(ensemble_settings, resume, resume=True)
        else:
            run(TrainConfig(), resume, resume=True)
        return
    if follow is not None:
        from molpipe.cli.serve import follow_file

        follow_file(data, follow, target, task, out, lr, epochs, seed, follow_idle, quiet)
        return
    from molpipe.training.settings import SettingsError

    # every option as the setting it sets (options given on the command line win over a file)
    options = {
        "data": ("data", data), "targets": ("target", target),
        "smiles_column": ("smiles_column", smiles_column), "task": ("task", task),
        "split": ("split", split), "split_column": ("split_column", split_column),
        "seed": ("seed", seed), "epochs": ("epochs", epochs),
        "patience": ("patience", patience), "hidden": ("hidden", hidden),
        "val_max": ("val_max", val_max),
        "aggregation": ("aggregation", aggregation), "dropout": ("dropout", dropout),
        "weight_decay": ("weight_decay", weight_decay),
        "readout_features": ("no_readout_features", not no_readout_features),
        "average": ("average", average), "propagate": ("propagate", propagate),
        "target_scaling": ("target_scaling", target_scaling), "baseline": ("baseline", baseline),
        "loss": ("loss", loss),
        "max_rounds": ("rounds", rounds), "min_rounds": ("rounds", min(2, rounds)),
        "lr": ("lr", lr), "schedule": ("schedule", schedule),
        "max_active_keys": ("max_active_keys", max_active_keys),
        "min_update_frequency": ("min_update_frequency", min_update_frequency),
        "molecules_per_instance": ("molecules_per_instance", molecules_per_instance),
        "backend": ("backend", backend), "on_nonfinite": ("on_nonfinite", on_nonfinite),
        "stall_timeout": ("stall_timeout", stall_timeout),
        "weight_stashing": ("no_weight_stashing", not no_weight_stashing),
        "weight_prediction": ("weight_prediction", weight_prediction),
        "update_criterion": ("update_criterion", update_criterion),
        "admission": ("admission", admission),
        "checkpoint_minutes": ("checkpoint_minutes", checkpoint_minutes),
        "placement": ("placement", placement), "layout": ("layout", layout),
        "replicas": ("replicas", replicas), "exchange_every": ("exchange_every", exchange_every),
        "from_model": ("from_model", from_model),
        "freeze": ("freeze", tuple(v.strip() for v in freeze.split(",") if v.strip())
                   if freeze else ()),
        "ensemble": ("ensemble", ensemble), "ensemble_jobs": ("ensemble_jobs", ensemble_jobs),
        "recalibrate": ("recalibrate", recalibrate),
        "track_test": ("test_every_epoch", test_every_epoch),
    }
    try:   # every setting checked before any work, named as typed here
        if config is None:
            if data is None:
                fail("give a data set (a bundled name such as esol, or a CSV/SDF file), "
                     "or --resume RUN_DIR")
            settings = TrainConfig(**{f: v for f, (_, v) in options.items()})
        else:
            given = {name for name in ctx.params if ctx.get_parameter_source(name).name
                     in ("COMMANDLINE", "ENVIRONMENT")}
            values = TrainConfig.from_file(config).to_dict()
            values.update({f: v for f, (name, v) in options.items() if name in given})
            settings = TrainConfig.from_dict(values, str(config))
    except SettingsError as err:
        fail(str(err))
    data, placement, backend = settings.data, settings.placement, settings.backend
    check_placement(placement)
    if backend == "mpi":   # ranks > 0 serve rank 0's workers, then leave without a word
        from molpipe.runtime.mpi_rank import serve_unless_control

        try:
            if serve_unless_control(replicas=settings.layout == "replicas"):
                return
        except MPIUnavailable as err:
            fail(str(err))
    # one rule for a directory that holds a run, given or default: never replaced unless
    # --overwrite; the run goes to the next free <dir>-N, and says so
    out = out or _default_run_dir(data)
    if out.exists() and any(out.iterdir()):
        if overwrite:
            shutil.rmtree(out)
        else:
            free = _free_run_dir(out)
            err_console.print(f"{out} holds a run: writing {free} (--overwrite replaces {out})",
                              soft_wrap=True)
            out = free

    if replicates < 1:
        fail(f"--replicates must be an integer of at least 1, not {replicates}")
    if replicates == 1:
        run(settings, out)
        return
    import dataclasses

    from molpipe.cli.measure import compare_table
    from molpipe.measure.compare import write_summary

    dirs = []
    for i in range(replicates):
        seed = settings.seed + i
        console.print(f"replicate {i + 1} of {replicates}: seed {seed}", highlight=False)
        dirs.append(out / f"seed-{seed}")
        run(dataclasses.replace(settings, seed=seed), dirs[-1])
    doc = write_summary(out, dirs)
    console.print(compare_table(doc["runs"] + [doc["summary"]]))
    console.print(f"summary: [bold]{out / 'summary.json'}[/bold]")
