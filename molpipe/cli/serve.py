"""molpipe serve: a model that answers predictions and learns from measurements while it runs."""

from __future__ import annotations

import ipaddress
from pathlib import Path
from typing import Annotated, Optional

import typer

from molpipe.cli import console, err_console, fail
from molpipe.serve.defaults import PUBLISH_EVERY, REPLAY_EPOCHS, SNAPSHOT_EVERY
from molpipe.training.settings import DEFAULTS

_WHAT, _NET, _LEARN = "Model", "Network", "Learning"
TOKEN_ENV = "MOLPIPE_TOKEN"
#: measured (benchmarks/bench_serve.py, README): featurizing processes raise /predict while
#: training is paused (1,783 against 1,248 molecules/s) but starve it while training runs
#: (514 against 1,160): in process by default
FEATURIZE_JOBS = 0


def is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host).is_loopback
    except ValueError:
        return False


def check_bind(host: str, token: str | None) -> None:
    """Refuse a non-loopback address without a token: anyone who can reach it could write."""
    if not is_loopback(host) and not token:
        fail(f"refusing to listen on {host} without a token: anyone who can reach this "
             f"machine could add measurements to the model; pass --token T (or set "
             f"{TOKEN_ENV}), or keep the default --host 127.0.0.1")


def need_serve_extra() -> None:
    try:
        import fastapi  # noqa: F401
        import uvicorn  # noqa: F401
    except ImportError:
        fail("molpipe serve needs FastAPI and uvicorn: pip install 'molpipe[serve]' "
             "(or pip install -e '.[serve]' in a clone)")


def build_model(data, model, target, task, out, lr, epochs, seed, replay_epochs,
                snapshot_every, publish_every, featurize_jobs: int = 0):
    """The OnlineModel the options describe (errors become one red line)."""
    from molpipe.data.errors import DataError
    from molpipe.io.checkpoint import CheckpointError
    from molpipe.io.model import ModelError
    from molpipe.serve import build
    from molpipe.serve.journal import JournalError
    from molpipe.training.settings import SettingsError, TrainConfig

    kw = {"snapshot_every": snapshot_every, "publish_every": publish_every,
          "featurize_jobs": featurize_jobs}
    try:
        if model is not None:
            if data is not None or target:
                fail("give either --model RUN_DIR or DATA (or --target for a new model)")
            return build.from_run(model, out, lr, replay_epochs=replay_epochs, **kw)
        if data is not None:
            config = TrainConfig(data=data, targets=target or None, task=task, seed=seed,
                                 epochs=epochs, lr=lr if lr is not None else DEFAULTS.lr)
            return build.from_data(config, out or Path("runs") / f"serve-{Path(data).stem}",
                                   **kw)
        if not target:
            fail("give --model RUN_DIR, a DATA set to train on, or --target NAME for a new "
                 "model that learns from what it observes")
        config = TrainConfig(seed=seed, lr=lr if lr is not None else DEFAULTS.lr)
        return build.untrained(target, task or "regression", out or Path("runs") / "serve",
                               config, replay_epochs=replay_epochs, **kw)
    except (DataError, ModelError, CheckpointError, JournalError, SettingsError,
            ValueError) as err:
        fail(str(err))


def serve(
    data: Annotated[Optional[str], typer.Argument(
        help="Train from scratch on this data set (bundled name or file) and serve from the "
             "first moment.", show_default=False)] = None,
    model: Annotated[Optional[Path], typer.Option(
        help="Serve (and go on training) the model of this run directory.",
        rich_help_panel=_WHAT)] = None,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Without DATA or --model: a new, untrained model of these targets (repeat).",
        rich_help_panel=_WHAT)] = None,
    task: Annotated[Optional[str], typer.Option(
        help="regression or classification (a new model; default regression).",
        rich_help_panel=_WHAT)] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Service directory: journal, rejects, prequential.csv, model/, checkpoints/ "
             "(default: RUN_DIR/serve, runs/serve-DATA or runs/serve). A restart with the "
             "same directory resumes.", rich_help_panel=_WHAT)] = None,
    host: Annotated[str, typer.Option(help="Address to listen on (loopback unless told).",
                                      rich_help_panel=_NET)] = "127.0.0.1",
    port: Annotated[int, typer.Option(help="Port.", rich_help_panel=_NET)] = 8000,
    token: Annotated[Optional[str], typer.Option(
        help=f"Bearer token every write (/observe, /snapshot, /training) needs (or "
             f"{TOKEN_ENV}); required off loopback.", envvar=TOKEN_ENV,
        rich_help_panel=_NET, show_default=False)] = None,
    lr: Annotated[Optional[float], typer.Option(
        help="Learning rate (default: the settings' for a new model, a tenth of the run's "
             "for --model).", rich_help_panel=_LEARN, show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="DATA: epochs over its training split.",
                                        rich_help_panel=_LEARN)] = DEFAULTS.epochs,
    replay_epochs: Annotated[int, typer.Option(
        help="Epochs over the observed rows after the last new one.",
        rich_help_panel=_LEARN)] = REPLAY_EPOCHS,
    seed: Annotated[int, typer.Option(help="Seed.", rich_help_panel=_LEARN)] = DEFAULTS.seed,
    snapshot_every: Annotated[float, typer.Option(
        help="Seconds between snapshots (model/ + checkpoint).",
        rich_help_panel=_LEARN)] = SNAPSHOT_EVERY,
    publish_every: Annotated[float, typer.Option(
        help="Seconds of training between the parameter versions predictions use.",
        rich_help_panel=_LEARN)] = PUBLISH_EVERY,
    featurize_jobs: Annotated[int, typer.Option(
        help="Processes that featurize large requests (RDKit holds the GIL): faster "
             "/predict with training paused, slower while it runs; 0: in the service's "
             "process.", rich_help_panel=_NET)] = FEATURIZE_JOBS,
) -> None:
    """Serve predictions over HTTP from a model that learns from measurements as they come.

    Examples: molpipe serve --model runs/esol · molpipe serve esol ·
    molpipe serve --target logS (then POST /observe). API docs at http://HOST:PORT/docs.
    """
    check_bind(host, token)
    need_serve_extra()
    import uvicorn

    from molpipe.serve.app import create_app

    online = build_model(data, model, target, task, out, lr, epochs, seed, replay_epochs,
                         snapshot_every, publish_every, featurize_jobs)
    online.start()
    st = online.status()
    restored = getattr(online, "restored_from", None)
    console.print(f"molpipe serve: {', '.join(online.targets)} ({online.task}) · "
                  f"model version {st['model_version']} · {st['rows']['observed']} rows "
                  f"observed" + (f" · resumed from {restored}" if restored else "") +
                  f"\n  http://{host}:{port}/  (API docs: /docs) · state in {online.out}"
                  + ("" if token else " · writes open (loopback only)"), soft_wrap=True)
    try:
        uvicorn.run(create_app(online, token=token), host=host, port=port,
                    log_level="warning", access_log=False)
    except SystemExit:          # uvicorn could not bind the port: it said why
        online.stop()
        raise typer.Exit(1)
    err_console.print(f"stopped · {len(online.folded)} rows folded · snapshot in "
                      f"{online.out / 'model'}", soft_wrap=True)


def follow_file(data, path: Path, target, task, out, lr, epochs, seed, idle, quiet) -> None:
    """``molpipe train --follow FILE``: the online loop of ``serve`` without HTTP."""
    from molpipe.serve.follow import FollowError, file_targets, follow

    if data is None and not target:
        try:
            target = file_targets(path) if path.exists() else None
        except FollowError as err:
            fail(str(err))
        if not target:
            fail(f"{path}: not there yet; give the targets with --target")
    out = out or Path("runs") / f"follow-{path.stem}"
    online = build_model(data, None, target, task, out, lr, epochs, seed, REPLAY_EPOCHS,
                         SNAPSHOT_EVERY, PUBLISH_EVERY)
    online.start()
    console.print(f"following {path}: {', '.join(online.targets)} · state in {out}"
                  + ("" if idle is None else f" · stops after {idle:g} s without a new row"),
                  soft_wrap=True)

    def batch(receipt, st) -> None:
        if quiet:
            return
        err = st["prequential"]["last"]
        shown = ", ".join(f"{t} {v:.3g}" for t, v in err.items() if v is not None)
        console.print(f"+{receipt['accepted']} rows ({len(receipt['rejected'])} rejected) · "
                      f"observed {st['rows']['observed']} · model version "
                      f"{st['model_version']} · prequential {st['prequential']['metric']} "
                      f"(last {st['prequential']['window']}): {shown or '-'}", soft_wrap=True)

    try:
        totals = follow(online, path, idle=idle, on_batch=batch)
    except FollowError as err:
        online.stop()
        fail(str(err))
    except KeyboardInterrupt:
        totals = None
    online.stop()
    st = online.status()
    console.print(f"stopped · {st['rows']['folded']} rows folded, {st['rows']['rejected']} "
                  f"rejected · model in {out / 'model'} · prequential log "
                  f"{out / 'prequential.csv'}" + ("" if totals else " (interrupted)"),
                  soft_wrap=True)
