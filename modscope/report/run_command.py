"""`modscope run`: N iterations headless, as JSON lines or readable tables."""

from __future__ import annotations

import argparse
import sys
from collections import Counter
from collections.abc import Sequence

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.table import Table
from rich.text import Text

from modscope.core.doctor import StepWatcher
from modscope.core.exit_codes import ExitCode
from modscope.core.fmt import (
    cell_width,
    format_number,
    printable,
    printable_lines,
    summary_line,
)
from modscope.core.hooks import HookSpec, HookSpecError, all_hooks_specs
from modscope.core.outputs import OutputError, check_writable
from modscope.core.session import Session
from modscope.core.types import Finding, HookEvent, StepRecord, UserError
from modscope.report.check_command import findings_report
from modscope.report.common import (
    SAVE,
    ScriptPrints,
    load_session,
    print_error,
    report_refusal,
    write_json_line,
)
from modscope.report.record import Iteration, PrintTee, RecordedRun, check_recording_folder

LOSS_WIDTH = 10
CHANGE_WIDTH = 48
"""At most this many cells for the `largest change` column (a longer key is cut with `…`)."""


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


class _RateColumn(ProgressColumn):
    """`12.5 steps/s` (or `s/step` when slower than one a second)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("- steps/s", style="dim")
        if speed < 1:
            return Text(f"{1 / speed:.1f} s/step", style="dim")
        return Text(f"{speed:.1f} steps/s", style="dim")


class StepProgress:
    """The bar on stderr while a run of several steps goes: step N/M, steps/s, loss, time left.

    Shown only when stderr is a terminal and there is more than one step; it disappears when
    the run ends. While it shows, the script's prints go through its console (`ScriptPrints`),
    and so do the rows when stdout is the terminal too (as rich's own stdout redirection does),
    so the bar is redrawn below them instead of being torn.
    """

    def __init__(self, steps: int, prints: ScriptPrints, console: Console | None = None) -> None:
        self.prints = prints
        console = console or Console(stderr=True, highlight=False)
        self.progress: Progress | None = None
        if steps > 1 and console.is_terminal:
            self.progress = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                _RateColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
            )
            self.task = self.progress.add_task("run", total=steps, loss="-")

    def __enter__(self) -> StepProgress:
        if self.progress is not None:
            self.progress.start()
            self.prints.console = self.progress.console
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the bar away (idempotent): before anything is printed after the run."""
        if self.progress is not None:
            self.prints.console = None
            self.progress.stop()
            self.progress = None

    def advance(self, record: StepRecord) -> None:
        if self.progress is not None:
            loss = format_number(record.loss) if record.loss is not None else "-"
            self.progress.update(self.task, advance=1, loss=loss)

    def console_for(self, console: Console) -> Console:
        """Where a line meant for `console` (stdout) goes now: the bar's console while the bar
        shows on the same terminal."""
        if self.progress is not None and console.is_terminal:
            return self.progress.console
        return console


class TableReport:
    """Readable output on stdout: a row per step as it completes, then the last `state_dict`,
    the hooks fired and the findings."""

    def __init__(self, session: Session, steps: int, progress: StepProgress) -> None:
        self.session = session
        self.console = Console(highlight=False)
        self.progress = progress
        self.fired: Counter[tuple[str, str, str]] = Counter()
        self.last_event: dict[tuple[str, str, str], HookEvent] = {}
        self.findings: list[Finding] = []
        self.last: StepRecord | None = None
        self.notes_shown = False
        self.step_width = max(4, len(str(steps)))
        self.change_width = 0

    def hook(self, event: HookEvent) -> None:
        key = (event.module or "(root)", event.kind.value, event.action.value)
        self.fired[key] += 1
        self.last_event[key] = event

    def step(self, record: StepRecord) -> None:
        console = self.progress.console_for(self.console)
        if self.last is None:
            longest = max((cell_width(printable(k)) for k in record.state), default=0)
            self.change_width = min(CHANGE_WIDTH, max(len("largest change"), longest + 12))
            self._print_notes(console)
            console.print(Text("Iterations", style="bold"))
            console.print(self._header(), soft_wrap=True)
        console.print(self._row(record), soft_wrap=True)
        self.last = record
        self.progress.advance(record)

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def error(self, error: UserError, show_traceback: bool) -> None:
        self.close()
        print_error(error, show_traceback=show_traceback)

    def close(self) -> None:
        """The summary after the rows: the state after the last step, hooks fired, findings."""
        self.progress.stop()
        c = self.console
        self._print_notes(c)
        if self.last is not None:
            c.print(self._state_table(self.last))
        if self.fired:
            c.print(self._hooks_table())
        if self.findings:
            c.print(findings_report(self.findings, title="Findings"))
        self.last = None
        self.findings = []
        self.fired.clear()

    def _print_notes(self, console: Console) -> None:
        # Printed once the first step has run: whether the output is the loss is known then.
        if self.notes_shown:
            return
        self.notes_shown = True
        for note in self.session.notes():
            console.print(Text(printable_lines(note), style="dim"))

    def _header(self) -> Text:
        return Text(
            f"{'step':>{self.step_width}}  {'mode':<5}  {'loss':>{LOSS_WIDTH}}  changed  "
            f"{'largest change':<{self.change_width}}  output",
            style="bold",
        )

    def _row(self, r: StepRecord) -> Text:
        loss = format_number(r.loss) if r.loss is not None else "-"
        text = Text(f"{r.step:>{self.step_width}}  {r.mode:<5}  {loss:>{LOSS_WIDTH}}  ")
        text.append(f"{len(r.diff.changed):>7}  ")
        top = r.diff.largest_change()  # integer counters never win
        if top is None:
            change = "-"
        else:
            delta = f" Δ{format_number(top[1])}"
            key = printable(top[0], limit=max(1, self.change_width - len(delta)))
            change = key + delta
        text.append(change + " " * max(0, self.change_width - cell_width(change)) + "  ")
        text.append(summary_line(r.output) if r.output else "-")
        return text

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
                Text(printable(key), style="bold" if key in record.diff.changed else ""),
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
                Text(printable(key[0])),
                key[1],
                key[2],
                str(count),
                Text(summary_line(first)) if first else Text("-"),
            )
        return table


def run_command(args: argparse.Namespace) -> int:
    """Load the script, run `--steps` iterations, report them; 0 ok, 2 a failure.

    Everything that can be refused before the run is: the hook specs' syntax and `--save-state`
    (its folder, its kind), so that a long run never ends in an unwritable path. A real Ctrl-C
    (`KeyboardInterrupt` out of `Session`) goes on up after what completed is printed.
    """
    try:
        specs = parse_specs(args.hook, args.hooks == "all")
    except HookSpecError as exc:
        return report_refusal(args, str(exc))
    if args.save_state is not None:
        try:
            check_writable(args.save_state)
        except OutputError as exc:
            return report_refusal(args, f"--save-state {args.save_state}: {exc}")
    if args.record is not None:
        try:
            check_recording_folder(args.record)
        except OutputError as exc:
            return report_refusal(args, f"--record {args.record}: {exc}")
    prints = ScriptPrints()
    tee = PrintTee(prints)
    session = load_session(args, sink=tee if args.record is not None else prints)
    if session is None:
        return ExitCode.FAILED
    try:
        try:
            attach_specs(session, specs)
        except HookSpecError as exc:
            return report_refusal(args, str(exc))
        if args.eval:
            session.set_training(False)
        return _run(session, args, prints, tee)
    finally:
        session.close()
        sys.stdout.flush()


class PlainRun:
    """The run's iterations straight from the session, the doctor watching them."""

    def __init__(self, session: Session) -> None:
        self.session = session
        self.watcher = StepWatcher(session)
        self.initial = tuple(self.watcher.initial())

    def step(self) -> Iteration:
        result = self.session.run_iteration()
        found = self.watcher.after_step(result.record) if result.record is not None else []
        return Iteration(result.events, result.record, result.error, tuple(found))

    def close(self) -> None:
        pass


def _run(session: Session, args: argparse.Namespace, prints: ScriptPrints, tee: PrintTee) -> int:
    with StepProgress(0 if args.json else args.steps, prints) as progress:
        report = JsonReport() if args.json else TableReport(session, args.steps, progress)
        if args.record is not None:
            run: PlainRun | RecordedRun = RecordedRun(
                session, args.record, tee, tensors_limit=args.record_tensors
            )
        else:
            run = PlainRun(session)
        try:
            # The doctor's static findings (step 0), then those of the iterations as they run: a
            # NaN loss is a `nonfinite` finding, not an error, and the run goes on.
            for finding in run.initial:
                report.finding(finding)
            for _ in range(args.steps):
                it = run.step()
                for event in it.events:
                    report.hook(event)
                if it.error is not None:
                    progress.stop()
                    report.error(it.error, args.traceback)
                    return ExitCode.FAILED
                assert it.record is not None
                report.step(it.record)
                for finding in it.findings:
                    report.finding(finding)
        except KeyboardInterrupt:
            progress.stop()
            report.close()  # what completed, then `modscope: interrupted` (cli.main)
            raise
        finally:
            run.close()
        progress.stop()
        report.close()
    if args.save_state is not None:
        try:
            session.save_state(args.save_state)
        except OutputError as exc:
            return report_refusal(args, str(exc), phase=SAVE, exc_type="OutputError")
        except Exception as exc:  # torch.save, or a `state_dict` hook of the script's, raised
            message = f"cannot write {args.save_state}: {str(exc).strip() or type(exc).__name__}"
            return report_refusal(args, message, phase=SAVE, exc_type=type(exc).__name__)
    return ExitCode.OK
