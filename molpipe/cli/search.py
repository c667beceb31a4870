"""molpipe hpopt: a hyperparameter search (Optuna, the optional ``search`` extra) whose trials
are training runs, pruned early on their validation curves, and a table of them."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Optional

import typer
from rich.markup import escape
from rich.table import Table

from molpipe.cli import console, err_console, fail
from molpipe.training.settings import DEFAULTS

_SEARCH, _DATA, _OUT = "Search", "Data", "Output"


def need_search_extra() -> None:
    """Fail with the install command when Optuna is missing."""
    from molpipe.measure.hpopt import import_optuna

    try:
        import_optuna()
    except ImportError as err:
        fail(str(err))


def _number(v, fmt: str = ".4g") -> str:
    return "-" if v is None or v == "" or v != v else f"{v:{fmt}}"


def trials_table(records: list[dict], metric: str, best: int | None) -> Table:
    """One row per trial: its state, drawn settings, best validation error, epochs, seconds."""
    table = Table(title=f"trials (validation {metric}; best in bold)", title_justify="left",
                  box=None, padding=(0, 1), collapse_padding=True, pad_edge=False)
    for name in ("trial", "state", "hidden", "rounds", "lr", "dropout", "readout", "val",
                 "epochs", "s"):
        table.add_column(name, justify="left" if name in ("state", "readout") else "right",
                         no_wrap=True)
    colour = {"complete": "green", "pruned": "yellow", "failed": "red"}
    for r in sorted(records, key=lambda r: r["number"]):
        state = r["state"]
        table.add_row(str(r["number"]), f"[{colour.get(state, 'dim')}]{state}[/]",
                      str(r.get("hidden", "")), str(r.get("max_rounds", "")),
                      _number(r.get("lr"), ".2e"), _number(r.get("dropout"), ".2f"),
                      escape(str(r.get("aggregation", ""))), _number(r.get("best_val_error")),
                      str(r["epochs"]), f"{r['seconds']:.1f}",
                      style="bold" if r["number"] == best else None)
    return table


def _describe(params: dict) -> str:
    """'hidden 128 · rounds 6 · lr 1.00e-03 · dropout 0.00 · mean+norm'."""
    parts = []
    for name, value in params.items():
        if name == "lr":
            parts.append(f"lr {value:.2e}")
        elif name == "dropout":
            parts.append(f"dropout {value:.2f}")
        elif name == "aggregation":
            parts.append(str(value))
        else:
            parts.append(f"{'rounds' if name == 'max_rounds' else name} {value}")
    return " · ".join(parts)


class SearchDisplay:
    """The ``progress`` callback of ``hpopt``: a status line while a trial trains, a line per
    finished trial (both left out with ``quiet``); warnings always."""

    def __init__(self, n_trials: int, epochs: int, quiet: bool):
        self.n_trials, self.epochs, self.quiet = n_trials, epochs, quiet
        self.status = None if quiet else err_console.status("", spinner="dots")
        self.best: tuple[float, int] | None = None
        self.params: dict = {}

    def __call__(self, event: str, **kw) -> None:
        if event == "warning":
            err_console.print(f"[yellow]warning:[/yellow] {escape(kw['message'])}", soft_wrap=True)
        if self.quiet:
            return
        if event == "trial":
            self.params = kw["params"]
            self.status.start()
            self.status.update(f"trial {kw['number'] + 1}/{self.n_trials} · {_describe(self.params)}")
        elif event == "epoch":
            best = "" if self.best is None else f" · best {self.best[0]:.4g} (trial {self.best[1]})"
            self.status.update(f"trial {kw['number'] + 1}/{self.n_trials} · epoch "
                               f"{kw['epoch']}/{self.epochs} · val {kw['value']:.4g} (its best "
                               f"{kw['best']:.4g}){best}")
        elif event == "result":
            self.status.stop()
            r = kw["record"]
            if r["state"] == "complete" and (self.best is None or r["best_val_error"] < self.best[0]):
                self.best = (r["best_val_error"], r["number"])
            why = f" · {escape(r['error'])}" if r["error"] else ""
            console.print(f"trial {r['number']} {r['state']} · {escape(_describe(self.params))} · "
                          f"val {_number(r['best_val_error'])} · {r['epochs']} epochs · "
                          f"{r['seconds']:.1f} s{why}", soft_wrap=True, highlight=False)

    def close(self) -> None:
        if self.status is not None:
            self.status.stop()


def hpopt(
    data: Annotated[str, typer.Argument(
        help="A bundled set (molpipe datasets), a CSV/SDF file or a store.", show_default=False)],
    trials: Annotated[int, typer.Option(help="Trials to run.", rich_help_panel=_SEARCH)] = 30,
    timeout: Annotated[Optional[float], typer.Option(
        help="Seconds after which no new trial starts (the running one finishes).",
        rich_help_panel=_SEARCH, show_default=False)] = None,
    epochs: Annotated[int, typer.Option(help="Most epochs per trial.",
                                        rich_help_panel=_SEARCH)] = DEFAULTS.epochs,
    seed: Annotated[int, typer.Option(
        help="Seed of the split, of every trial's initialization and data order, and of the "
             "sampler.", rich_help_panel=_SEARCH)] = DEFAULTS.seed,
    config: Annotated[Optional[Path], typer.Option(
        help="Settings every trial starts from (a run's config.toml or one written by hand); "
             "the searched ones are drawn, options given here override the rest.",
        rich_help_panel=_SEARCH, show_default=False)] = None,
    split: Annotated[str, typer.Option(
        help="random, scaffold, or a JSON file of train/val/test rows (the same in every trial).",
        rich_help_panel=_DATA)] = DEFAULTS.split,
    target: Annotated[Optional[list[str]], typer.Option(
        help="Target column; repeat for several (default: the set's).",
        rich_help_panel=_DATA, show_default=False)] = None,
    out: Annotated[Optional[Path], typer.Option(
        help="Output directory: trials.csv, best_config.toml, hpopt.json, trials/ (default "
             "runs/hpopt-<data>; if it holds a search: the next free <out>-N).",
        rich_help_panel=_OUT, show_default=False)] = None,
    quiet: Annotated[bool, typer.Option("--quiet", help="No line per trial (the table still).",
                                        rich_help_panel=_OUT)] = False,
) -> None:
    """Search hidden size, rounds, learning rate, dropout and readout for DATA (Optuna).

    Searched: hidden 64–256 step 32 · rounds 2–8 · lr 1e-4–1e-2 (log) · dropout 0–0.4 step 0.05
    · readout mean, sum, norm, attention or mean+norm. The first trial is the starting settings'.
    Every trial trains on the same split with the same seed; one whose best validation error
    falls behind the median of the earlier trials' at the same epoch stops there (pruned).
    Needs Optuna: pip install "molpipe\\[search]".

    Example: molpipe hpopt esol --trials 30, then
    molpipe train --config runs/hpopt-esol/best_config.toml
    """
    import dataclasses

    from molpipe.cli.train import _default_run_dir, _free_run_dir
    from molpipe.data.errors import DataError
    from molpipe.measure.hpopt import BEST_TOML, TRIALS_CSV, HpoptError, hpopt as search
    from molpipe.training.settings import SettingsError, TrainConfig

    need_search_extra()
    try:
        base = TrainConfig.from_file(config) if config is not None else TrainConfig()
        base = dataclasses.replace(base, data=data, seed=seed, split=split, epochs=epochs,
                                   **({"targets": target} if target else {}))
    except SettingsError as err:
        fail(str(err))
    out = out or _default_run_dir(data).with_name(f"hpopt-{_default_run_dir(data).name}")
    if out.exists() and any(out.iterdir()):
        free = _free_run_dir(out)
        err_console.print(f"{out} holds a search: writing {free}", soft_wrap=True)
        out = free
    display = SearchDisplay(trials, epochs, quiet)
    try:
        summary = search(base, out, n_trials=trials, timeout=timeout, progress=display)
    except (HpoptError, DataError, SettingsError) as err:
        display.close()
        fail(str(err))
    finally:
        display.close()
    import csv

    with open(out / TRIALS_CSV, encoding="utf-8") as f:
        records = [_typed(r) for r in csv.DictReader(f)]
    best = summary["best"]
    console.print(trials_table(records, summary["metric"].removeprefix("validation "),
                               best["number"] if best else None))
    s = summary["states"]
    console.print(f"{summary['trials']} trials in {summary['wall_seconds']:.0f} s: "
                  f"{s['complete']} complete, {s['pruned']} pruned, {s['failed']} failed"
                  + (" · interrupted" if summary["interrupted"] else ""), highlight=False)
    if best is None:
        reasons = [r["error"] for r in records if r.get("error")]
        fail("no trial completed" + (f"; trial {records[0]['number']}: {reasons[0]}"
                                     if reasons else "") + f" ({out / TRIALS_CSV})", code=1)
    console.print(f"best: trial {best['number']} · {escape(summary['metric'])} "
                  f"{best['best_val_error']:.4g} · [bold]{out / BEST_TOML}[/bold] "
                  f"(molpipe train --config {out / BEST_TOML})", soft_wrap=True)


def _typed(row: dict) -> dict:
    """A trials.csv row with its numbers as numbers."""
    out = dict(row)
    for k in ("number", "hidden", "max_rounds", "epochs"):
        if out.get(k) not in (None, ""):
            out[k] = int(out[k])
    for k in ("lr", "dropout", "best_val_error", "seconds"):
        out[k] = float(out[k]) if out.get(k) not in (None, "") else None
    return out
