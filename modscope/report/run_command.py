"""`modscope run`: N iterations headless, as JSON lines or readable tables."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table
from rich.text import Text

from modscope.core.doctor import StepWatcher
from modscope.core.exit_codes import ExitCode
from modscope.core.fmt import format_number, summary_line
from modscope.core.hooks import HookSpec, HookSpecError, all_hooks_specs
from modscope.core.session import Session
from modscope.core.types import Finding, HookEvent, StepRecord, UserError
from modscope.report.check_command import findings_report
from modscope.report.common import load_session, print_error, print_message, write_json_line

ROWS_SHOWN = 20


def parse_specs(texts: Sequence[str], all_hooks: bool) -> list[HookSpec]:
    specs = [HookSpec.parse(t) for t in texts]
    if all_hooks:
        specs = all_hooks_specs() + specs
    return specs


def attach_specs(session: Session, specs: Sequence[HookSpec]) -> None:
    for spec in specs:
        session.attach(spec)


class JsonReport:
    """JSON lines on stdout, one per event, flushed as they happen."""

    def hook(self, event: HookEvent) -> None:
        write_json_line(event.to_json())

    def step(self, record: StepRecord) -> None:
        write_json_line(record.to_json())

    def finding(self, finding: Finding) -> None:
        write_json_line({"event": "finding", "step": finding.step, **finding.to_json()})

    def error(self, error: UserError, show_traceback: bool) -> None:
        write_json_line(error.to_json())
        print_error(error, show_traceback=show_traceback)

    def close(self) -> None:
        pass


class TableReport:
    """Readable tables on stdout; a progress bar while it runs when stdout is a terminal."""

    def __init__(self, session: Session, steps: int) -> None:
        self.session = session
        self.console = Console(highlight=False)
        self.records: list[StepRecord] = []
        self.fired: Counter[tuple[str, str, str]] = Counter()
        self.last_event: dict[tuple[str, str, str], HookEvent] = {}
        self.findings: list[Finding] = []
        self.progress: Progress | None = None
        if self.console.is_terminal and steps > 1:
            self.progress = Progress(
                TextColumn("step"),
                BarColumn(),
                MofNCompleteColumn(),
                TextColumn("loss {task.fields[loss]}"),
                console=self.console,
                transient=True,
            )
            self.task = self.progress.add_task("run", total=steps, loss="?")
            self.progress.start()

    def hook(self, event: HookEvent) -> None:
        key = (event.module or "(root)", event.kind.value, event.action.value)
        self.fired[key] += 1
        self.last_event[key] = event

    def step(self, record: StepRecord) -> None:
        self.records.append(record)
        if self.progress is not None:
            self.progress.update(self.task, advance=1, loss=format_number(record.loss))

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def error(self, error: UserError, show_traceback: bool) -> None:
        self._stop()
        self.close()
        print_error(error, show_traceback=show_traceback)

    def _stop(self) -> None:
        if self.progress is not None:
            self.progress.stop()
            self.progress = None

    def close(self) -> None:
        self._stop()
        c = self.console
        for note in self.session.notes():
            c.print(Text(note, style="dim"))
        if self.records:
            c.print(self._steps_table())
            c.print(self._state_table(self.records[-1]))
        if self.fired:
            c.print(self._hooks_table())
        if self.findings:
            c.print(findings_report(self.findings, title="Findings"))
        self.records = []
        self.findings = []
        self.fired.clear()

    def _steps_table(self) -> Table:
        table = Table(title="Iterations", title_justify="left")
        for name in ("step", "mode", "loss", "output", "changed", "largest change"):
            table.add_column(name, justify="right" if name in ("step", "loss") else "left")
        rows = self.records
        shown = rows if len(rows) <= ROWS_SHOWN else rows[:5] + rows[-(ROWS_SHOWN - 5) :]
        for i, r in enumerate(shown):
            if len(rows) > ROWS_SHOWN and i == 5:
                table.add_row("…", "", Text(f"{len(rows) - ROWS_SHOWN} more", style="dim"))
            top = max(r.diff.max_abs_delta.items(), key=lambda kv: kv[1] or 0.0, default=None)
            table.add_row(
                str(r.step),
                r.mode,
                format_number(r.loss) if r.loss is not None else "-",
                Text(summary_line(r.output)) if r.output else Text("-"),
                str(len(r.diff.changed)),
                Text(f"{top[0]} Δ{format_number(top[1])}") if top else Text("-"),
            )
        return table

    def _state_table(self, record: StepRecord) -> Table:
        table = Table(title=f"state_dict after step {record.step}", title_justify="left")
        table.add_column("key")
        table.add_column("value")
        table.add_column("grad")
        table.add_column("Δ last step", justify="right")
        keys = list(record.state)
        for key in keys[:50]:
            grad = record.grads.get(key)
            delta = record.diff.max_abs_delta.get(key)
            table.add_row(
                Text(key, style="bold" if key in record.diff.changed else ""),
                Text(summary_line(record.state[key])),
                Text(summary_line(grad)) if grad else Text("-" if key in record.grads else ""),
                format_number(delta) if delta is not None else "",
            )
        if len(keys) > 50:
            table.caption = f"showing 50 of {len(keys)} keys (--json has them all)"
        return table

    def _hooks_table(self) -> Table:
        table = Table(title="Hooks fired", title_justify="left")
        for name in ("module", "kind", "action", "fired", "last seen"):
            table.add_column(name)
        for key, count in self.fired.items():
            event = self.last_event[key]
            seen = event.output or event.grad_input or event.grad_output or event.args or ()
            first = next((s for s in seen if s is not None), None)
            table.add_row(
                Text(key[0]),
                key[1],
                key[2],
                str(count),
                Text(summary_line(first)) if first else Text("-"),
            )
        return table


def run_command(args: argparse.Namespace) -> int:
    try:
        specs = parse_specs(args.hook, args.hooks == "all")
    except HookSpecError as exc:
        print_message(str(exc))
        return ExitCode.FAILED
    session = load_session(args)
    if session is None:
        return ExitCode.FAILED
    try:
        try:
            attach_specs(session, specs)
        except HookSpecError as exc:
            print_message(str(exc))
            return ExitCode.FAILED
        if args.eval:
            session.set_training(False)
        report = JsonReport() if args.json else TableReport(session, args.steps)
        # The doctor's static findings (step 0), then those of the iterations as they run: a
        # NaN loss is a `nonfinite` finding, not an error, and the run goes on.
        watcher = StepWatcher(session)
        for finding in watcher.initial():
            report.finding(finding)
        for _ in range(args.steps):
            result = session.run_iteration()
            for event in result.events:
                report.hook(event)
            if result.error is not None:
                report.error(result.error, args.traceback)
                return ExitCode.FAILED
            assert result.record is not None
            report.step(result.record)
            for finding in watcher.after_step(result.record):
                report.finding(finding)
        report.close()
        if args.save_state:
            try:
                session.save_state(args.save_state)
            except OSError as exc:
                print_message(f"cannot write {args.save_state}: {exc.strerror or exc}")
                return ExitCode.FAILED
        return ExitCode.OK
    finally:
        session.close()
        sys.stdout.flush()
