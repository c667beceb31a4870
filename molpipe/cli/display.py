"""Rich live displays for long commands: training progress, worker utilization, tables."""

from __future__ import annotations

import time

from rich.console import Console, Group
from rich.live import Live
from rich.markup import escape
from rich.progress import (BarColumn, MofNCompleteColumn, Progress, TextColumn,
                           TimeElapsedColumn, TimeRemainingColumn)
from rich.table import Table


def utilization_table(utilization: dict, cpu: dict | None = None) -> Table:
    """One bar per worker: the fraction of wall time it spent computing; with ``cpu``, also
    its thread's CPU time over the wall time (messages and waiting for the GIL included)."""
    table = Table(show_header=True, header_style="bold", box=None, pad_edge=False)
    table.add_column("worker")
    table.add_column("utilization", min_width=30)
    if cpu:
        table.add_column("cpu", justify="right")
    for name, frac in utilization.items():
        n = int(round(24 * max(0.0, min(1.0, frac))))
        row = [name, f"[green]{'█' * n}[/][dim]{'·' * (24 - n)}[/] {100 * frac:5.1f}%"]
        if cpu:
            row.append(f"{100 * cpu.get(name, 0.0):5.1f}%")
        table.add_row(*row)
    return table


def metrics_rich_table(title: str, metrics: dict, units: dict | None = None) -> Table:
    """{target: {metric: value}} as a table (metric columns in first-seen order); with
    ``units`` ({target: unit}), a unit column."""
    names = [m for m in next(iter(metrics.values()), {}) if m != "n"]
    table = Table(title=title, title_justify="left")
    table.add_column("target")
    for m in names:
        table.add_column(m.upper() if m != "r2" else "R²", justify="right")
    table.add_column("n", justify="right")
    if units:
        table.add_column("unit (RMSE, MAE)")
    for target, ms in metrics.items():
        row = [target, *(f"{ms[m]:.4f}" for m in names), str(ms.get("n", ""))]
        table.add_row(*row, *([escape(units.get(target, ""))] if units else []))
    return table


def regression_table(title: str, metrics: dict, summary: dict, units: dict | None = None) -> Table:
    """RMSE, MAE, R² per target (and its unit, when known), and their mean in a last row
    when there are several."""
    table = metrics_rich_table(title, metrics, units)
    if len(metrics) > 1:
        names = [m for m in next(iter(metrics.values())) if m != "n"]
        table.add_section()
        table.add_row("mean", *(f"{summary.get(m, float('nan')):.4f}" for m in names), "",
                      *([""] if units else []))
    return table


def one_class(m: dict) -> str:
    """Why a task has no AUC: 'no labels', 'one class' or ''."""
    if not m.get("n"):
        return "no labels"
    return "one class" if m.get("positives") in (0, m.get("n")) else ""


def classification_table(title: str, metrics: dict, summary: dict) -> Table:
    """ROC-AUC, PR-AUC, accuracy, positives and n per task, and the mean of the tasks with an AUC."""
    table = Table(title=title, title_justify="left")
    table.add_column("task", overflow="fold")
    for name in ("ROC-AUC", "PR-AUC", "accuracy", "positives", "n"):
        table.add_column(name, justify="right", no_wrap=True)
    number = lambda v: "n/a" if v is None or v != v else f"{v:.4f}"
    for task, m in metrics.items():
        auc, prc = number(m["auc"]), number(m["prc_auc"])
        why = one_class(m)
        if auc == "n/a" and why:
            auc = prc = f"n/a ({why})"
        table.add_row(escape(task), auc, prc, number(m["accuracy"]), str(m["positives"]),
                      str(m["n"]))
    k, n = summary["tasks_in_mean"], len(metrics)
    table.add_section()
    table.add_row(f"mean ({k} of {n} tasks)" if k != n else f"mean ({n} task{'s' * (n != 1)})",
                  number(summary["auc"]), number(summary["prc_auc"]), "", "", "")
    return table


class TrainDisplay:
    """The ``progress`` callback of ``molpipe.training.train.train``, drawn with rich."""

    def __init__(self, console: Console | None = None, quiet: bool = False):
        self.console = console or Console()
        self.err_console = Console(stderr=True)
        self.quiet = quiet
        self.progress = Progress(
            TextColumn("[bold]{task.description}"), BarColumn(), MofNCompleteColumn(),
            TextColumn("{task.fields[info]}"), TimeElapsedColumn(),
            TextColumn("eta"), TimeRemainingColumn(), console=self.console,
        )
        # off a terminal (a log file, a pipe): one plain line per epoch, no live frame
        self.plain = not self.console.is_terminal
        self.task = "regression"
        self.units: dict = {}
        self.live: Live | None = None
        self.epoch_task = self.mol_task = None
        self.utilization: dict = {}
        self.t_epoch = time.perf_counter()
        self.n_epoch = 0
        self.loss_sum = self.loss_n = 0.0

    def _render(self):
        parts = [self.progress]
        if self.utilization:
            parts.append(utilization_table(self.utilization))
        return Group(*parts)

    def __call__(self, event: str, **kw) -> None:
        if event == "warning":              # said even when quiet: it changes what was done
            self.err_console.print(f"[yellow]warning:[/yellow] {escape(kw['message'])}",
                                   soft_wrap=True)
            return
        if event == "done":
            self._done(kw["report"])
            return
        if event == "stopped":           # early stopping changes what was done: said when quiet
            n = kw["patience"]
            self.console.print(f"stopped at epoch {kw['epoch']}: no better validation for "
                               f"{n} epoch{'s' * (n != 1)}; best epoch {kw['best_epoch']}")
            return
        if self.quiet:
            return
        if event == "preprocess":
            self.console.print(f"[dim]{kw.get('message', '')}[/]")
        elif event == "start":
            self.console.print(
                f"train {kw['n_train']} · val {_val_note(kw)} · test {kw['n_test']} molecules · "
                f"{kw['parameters']:,} parameters · {kw.get('task', '')} · readout "
                f"{kw.get('aggregation', '')}{_baseline_note(kw.get('baseline'))}", soft_wrap=True)
            self.task, self.units = kw.get("task", "regression"), kw.get("units") or {}
            self.n_epochs = kw["epochs"]
            if self.plain:
                return
            first = kw.get("first_epoch", 0)
            self.epoch_task = self.progress.add_task("epochs", total=kw["epochs"], info="",
                                                     completed=first)
            self.mol_task = self.progress.add_task(f"epoch {first + 1}", total=kw["n_train"], info="")
            self.live = Live(self._render(), console=self.console, refresh_per_second=8,
                             transient=False)
            self.live.start()
        elif self.plain and event == "epoch":
            self.console.print(f"epoch {kw['epoch']}/{self.n_epochs} · "
                               f"{self._epoch_info(kw)}", soft_wrap=True)
        elif self.plain:
            return
        elif event == "instance":
            self.n_epoch += kw["n"]
            self.loss_sum += kw["loss"]
            self.loss_n += 1
            rate = self.n_epoch / max(time.perf_counter() - self.t_epoch, 1e-9)
            self.progress.update(self.mol_task, completed=self.n_epoch,
                                 info=f"loss {self.loss_sum / self.loss_n:.4f} · {rate:,.0f} mol/s")
        elif event == "epoch":
            self.utilization = kw.get("utilization") or {}
            self.progress.update(self.epoch_task, advance=1, info=self._epoch_info(kw))
            self.progress.reset(self.mol_task, description=f"epoch {kw['epoch'] + 1}")
            self.t_epoch, self.n_epoch, self.loss_sum, self.loss_n = time.perf_counter(), 0, 0.0, 0
            if self.live:
                self.live.update(self._render())

    def _epoch_info(self, kw: dict) -> str:
        """'train loss 0.1234 · val RMSE 0.612 log10(mol/L) · 1,500 mol/s · 4 in flight'."""
        return (f"train loss {kw['train_loss']:.4f} · val {self._val(kw.get('val_summary'))} · "
                f"{kw['train_molecules_per_second']:,.0f} mol/s · "
                f"{kw.get('in_flight_max', 1)} in flight")

    def _val(self, s: dict | None) -> str:
        """The validation metric in the target's units: 'RMSE 0.612 log10(mol/L)', 'ROC-AUC 0.851'."""
        if not s:
            return "n/a"
        if self.task == "classification":
            return f"ROC-AUC {_number(s.get('auc'))}"
        unit = next(iter(self.units.values())) if len(set(self.units.values())) == 1 else ""
        many = " (mean)" if len(self.units) > 1 and not unit else ""
        return f"RMSE {_number(s.get('rmse'))}{' ' + unit if unit else ''}{many}"

    def _done(self, report: dict) -> None:
        """The test table and one summary line, quiet or not."""
        if self.live:
            self.progress.remove_task(self.mol_task)
            self.live.update(self._render())
            self.live.stop()
            self.live = None
        self.console.print()
        if report.get("task") == "classification":
            table = classification_table("test", report["test"], report.get("test_summary") or {})
        else:
            table = regression_table("test", report["test"], report.get("test_summary") or {},
                                     report.get("units"))
        self.console.print(table)
        self.console.print(
            f"{report['epochs']} epoch{'s' * (report['epochs'] != 1)} in "
            f"{report['wall_seconds']:.1f} s · "
            f"{report['train_molecules_per_second']:,.0f} training molecules/s · "
            f"best epoch {report['best_epoch']}")

    def close(self) -> None:
        if self.live:
            self.live.stop()
            self.live = None


def _val_note(kw: dict) -> str:
    """The validation rows, and the sample epochs are selected on (--val-max) if smaller."""
    used = kw.get("n_val_used", kw["n_val"])
    return f"{kw['n_val']}" if used == kw["n_val"] else f"{kw['n_val']} (selecting on {used})"


def _baseline_note(baseline: dict | None) -> str:
    """' · additive baseline for u0 (R² 1.00 on train)' or ''."""
    if not baseline or not baseline.get("used"):
        return ""
    r2 = baseline.get("train_r2", {})
    used = ", ".join(f"{t} (R² {r2.get(t) or 0:.2f} on train)" for t in baseline["used"][:3])
    more = f" and {len(baseline['used']) - 3} more" if len(baseline["used"]) > 3 else ""
    return f" · additive baseline for {used}{more}"


def _number(v) -> str:
    """Four significant digits, 'n/a' for None or NaN."""
    return "n/a" if v is None or v != v else f"{v:.4g}"


def calibration_rich_table(title: str, calibration: dict) -> Table:
    """{target: calibration metrics} (``molpipe.training.calibration``) as a table."""
    table = Table(title=title, title_justify="left")
    for name, justify in (("target", "left"), ("ρ(|err|,σ)", "right"), ("in 68 %", "right"),
                          ("in 95 %", "right"), ("miscal.", "right"), ("NLL", "right"),
                          ("n", "right")):
        table.add_column(name, justify=justify)
    for target, m in calibration.items():
        table.add_row(escape(target), _number(m["spearman"]),
                      *(f"{100 * m[k]:.1f} %" if m[k] == m[k] else "—"
                        for k in ("within_68", "within_95")),
                      _number(m["miscalibration_area"]), _number(m["nll"]), str(m["n"]))
    return table


class EnsembleDisplay:
    """One bar per member (epochs, best validation score so far) while an ensemble trains;
    ``quiet``: nothing but warnings. Called as ``display(member, event, **kw)``."""

    def __init__(self, n: int, epochs: int, console: Console | None = None,
                 quiet: bool = False):
        self.console, self.quiet = console or Console(), quiet
        self.progress = Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), TextColumn("{task.fields[note]}"),
                                 TimeElapsedColumn(), console=self.console, disable=quiet)
        self.tasks = [self.progress.add_task(f"member {i}", total=epochs, note="")
                      for i in range(n)]
        self.best = [float("inf")] * n
        self.progress.start()

    def __call__(self, member: int, event: str, **kw) -> None:
        task = self.tasks[member]
        if event == "warning" and member == 0:
            self.console.print(f"[yellow]warning:[/yellow] {escape(kw['message'])}",
                               soft_wrap=True)
        elif event == "start":
            self.progress.update(task, total=kw["epochs"], completed=kw.get("first_epoch", 0))
        elif event == "epoch":
            self.best[member] = min(self.best[member], kw.get("val_score", float("inf")))
            self.progress.update(task, completed=kw["epoch"],
                                 note=f"best val score {_number(self.best[member])}")
        elif event in ("done", "stopped"):
            total = self.progress.tasks[task].completed
            self.progress.update(task, total=total or None, note=self.progress.tasks[task]
                                 .fields["note"] + (" (stopped early)" if event == "stopped" else ""))

    def close(self) -> None:
        self.progress.stop()


def ensemble_summary(report: dict, out) -> Table | Group:
    """Each member's test metrics, their mean and the ensemble's; σ's calibration below."""
    task = report["task"]
    names = ("rmse", "mae", "r2") if task == "regression" else ("auc", "prc_auc")
    ens = report["ensemble"]
    table = Table(title=f"ensemble of {len(ens['members'])} in {out} "
                        f"({report['wall_seconds']:.1f} s, {ens['jobs']} at a time)",
                  title_justify="left")
    table.add_column("test split")
    for m in names:
        table.add_column(m.upper() if m != "r2" else "R²", justify="right")
    for name, s in zip(ens["members"], ens["member_test_summary"]):
        table.add_row(name, *(_number(s.get(m)) for m in names))
    table.add_section()
    table.add_row("members' mean", *(_number(ens["member_mean_test_summary"].get(m))
                                     for m in names))
    table.add_row("[bold]ensemble[/bold]", *(f"[bold]{_number(report['test_summary'].get(m))}"
                                             f"[/bold]" for m in names))
    if "calibration" not in report:
        return table
    scaled = " (σ recalibrated on the validation split)" if ens.get("std_scale") else ""
    return Group(table, calibration_rich_table(f"σ on the test split{scaled}",
                                               report["calibration"]["test"]))
