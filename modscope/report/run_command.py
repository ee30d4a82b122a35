"""`modscope run`: N iterations headless, as JSON lines or readable tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections import Counter
from collections.abc import Sequence
from dataclasses import dataclass, replace

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modscope.core.break_spec import BreakSpecError, parse_conditions
from modscope.core.distributed import RankWatcher
from modscope.core.doctor import StepWatcher
from modscope.core.exit_codes import ExitCode
from modscope.core.fmt import (
    cell_width,
    format_number,
    printable,
    printable_lines,
    summary_line,
    wrap_path,
)
from modscope.core.hooks import HookSpec, HookSpecError, all_hooks_specs
from modscope.core.layer_stats import LayerWatch
from modscope.core.layer_types import LayerStep
from modscope.core.outputs import (
    FolderLock,
    OutputError,
    check_writable,
    is_within,
    loaded_module_of,
    same_file,
)
from modscope.core.process_rank import launched_rank, rank_folder
from modscope.core.session import Session
from modscope.core.types import BreakEvent, Finding, HookEvent, StepRecord, UserError
from modscope.report.breaks import StopAtBreak, break_paragraph
from modscope.report.check_command import findings_report
from modscope.report.common import (
    SAVE,
    ScriptPrints,
    error_console,
    load_session,
    print_error,
    report_refusal,
    write_json_line,
)
from modscope.report.layers_table import TREND_WIDTH, print_layers
from modscope.report.progress import StepProgress
from modscope.report.ranks import QuietRank, on_rank_zero
from modscope.report.record import (
    TENSORS_FOLDER,
    Iteration,
    PrintTee,
    RecordedRun,
    check_recording_folder,
    open_recording_folder,
    recording_files,
)
from modscope.report.step_json import write_step

RECORD = "record"
"""The `phase` of an error line for a `--record` that failed to write during the run."""
LOSS_WIDTH = 10
CHANGE_WIDTH = 48
"""At most this many cells for the `largest change` column (a longer key is cut with `…`)."""
KEY_MAX_WIDTH = 48
"""The state table's key column takes up to this many cells, as long as each summary column
keeps 16; a longer key is broken after a dot onto more lines (never cut with `…`)."""


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
        write_step(record)

    def layers(self, step: LayerStep) -> None:
        write_json_line(step.to_json())

    def finding(self, finding: Finding) -> None:
        write_json_line({"event": "finding", "step": finding.step, **finding.to_json()})

    def error(self, error: UserError, show_traceback: bool) -> None:
        write_json_line(error.to_json())
        print_error(error, show_traceback=show_traceback)

    def broke(self, event: BreakEvent) -> None:
        write_json_line(event.to_json())

    def close(self) -> None:
        pass


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
        self.layer_steps: list[LayerStep] = []

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

    def layers(self, step: LayerStep) -> None:
        """Kept for the table after the rows: the last step's modules, with a trend."""
        self.layer_steps = [*self.layer_steps[-(TREND_WIDTH - 1) :], step]

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def error(self, error: UserError, show_traceback: bool) -> None:
        self.close()
        print_error(error, show_traceback=show_traceback)

    def broke(self, event: BreakEvent) -> None:
        """What completed, then the break, last."""
        self.close()
        self.console.print(break_paragraph(event), soft_wrap=True)

    def close(self) -> None:
        """The summary after the rows: the state after the last step, hooks fired, findings."""
        self.progress.stop()
        c = self.console
        self._print_notes(c)
        if self.last is not None:
            c.print(self._state_table(self.last))
        if self.layer_steps:
            print_layers(c, self.layer_steps)
        if self.fired:
            c.print(self._hooks_table())
        if self.findings:
            c.print(findings_report(self.findings, title="Findings"))
        self.last = None
        self.findings = []
        self.layer_steps = []
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
        keys = list(record.state)
        # The key is what a person reads the row by: the summaries wrap before it is cut, and
        # a key too long even for that is broken after a dot instead of losing its end.
        longest = max((len(printable(k)) for k in keys[:50]), default=3)
        # Borders and padding of four columns (13 cells), the Δ column (11), 16 for each summary.
        room = self.console.width - 13 - 11 - 2 * 16
        key_width = max(12, min(longest, KEY_MAX_WIDTH, room))
        table.add_column("key", overflow="fold", width=key_width)
        table.add_column("value")
        table.add_column("grad")
        table.add_column("Δ last step", justify="right")
        sampled = set(record.diff.sampled)
        for key in keys[:50]:
            grad = record.grads.get(key)
            delta = record.diff.max_abs_delta.get(key)
            table.add_row(
                Text(
                    wrap_path(printable(key), key_width),
                    style="bold" if key in record.diff.changed else "",
                ),
                Text(summary_line(record.state[key])),
                Text(summary_line(grad)) if grad else Text("-" if key in record.grads else ""),
                ("≈" if key in sampled else "") + format_number(delta) if delta is not None else "",
            )
        if len(keys) > 50:
            table.caption = f"showing 50 of {len(keys)} keys (--json has them all)"
        if sampled:
            note = "≈: past --memory-budget, Δ from a sample (changed or not is exact)"
            table.caption = f"{table.caption}; {note}" if table.caption else note
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


@dataclass(frozen=True)
class OutputPaths:
    """`--save-state` and `--record` made absolute against the command line's working folder
    (the script may `chdir` while it loads), with the text each was given as, for messages."""

    state: str | None
    state_text: str | None
    record: str | None
    record_text: str | None

    @classmethod
    def of(cls, args: argparse.Namespace) -> OutputPaths:
        state, record = args.save_state, args.record
        return cls(
            os.path.abspath(state) if state else state,
            state,
            os.path.abspath(record) if record else record,
            record,
        )


def run_command(args: argparse.Namespace) -> int:
    """`_run_command` in this process; under torchrun (`RANK` and `WORLD_SIZE` set) each rank
    runs it: rank 0 reports as one process would, the others stay quiet unless they fail
    (`QuietRank`), `--record DIR` writes each rank's recording to `DIR/rank<N>`, and only rank
    0 writes `--save-state`."""
    paths = OutputPaths.of(args)
    place = launched_rank()
    if place is not None:
        if paths.record is not None:
            paths = replace(paths, record=rank_folder(paths.record, place.rank))
        if place.rank != 0:
            # Rank 0 writes --save-state, as scripts save (`if rank == 0: torch.save(...)`):
            # ranks writing one path would race, and with broadcast buffers their copies
            # differ by design.
            paths = replace(paths, state=None, state_text=None)
    return on_rank_zero(lambda a: _run_command(a, paths), args)


def _run_command(args: argparse.Namespace, paths: OutputPaths) -> int:
    """Load the script, run `--steps` iterations, report them; 0 ok, 2 a failure.

    Everything that can be refused before the run is: the hook specs' syntax, and the outputs
    (`--save-state`, `--record`: their folders and kinds, never the script, a module it
    imported or each other, a `--record` folder only when it is new, empty or, with
    `--overwrite`, this script's recording), so that a long run never ends in an unwritable
    path and no output replaces a file of the user's. A real Ctrl-C (`KeyboardInterrupt` out
    of `Session`) goes on up after what completed is printed.
    """
    try:
        specs = parse_specs(args.hook, args.hooks == "all")
        conditions = parse_conditions(getattr(args, "breaks", []))
    except (HookSpecError, BreakSpecError) as exc:
        return report_refusal(args, str(exc))
    script = os.path.abspath(args.script)
    overwrite = bool(getattr(args, "overwrite", False))
    if overwrite and args.record is None:
        return report_refusal(args, "--overwrite replaces a recording: give it with --record DIR")
    try:
        check_outputs(paths, script, overwrite=overwrite)
    except OutputError as exc:
        return report_refusal(args, str(exc))
    prints = ScriptPrints()
    tee = PrintTee(prints)
    session = load_session(args, sink=tee if paths.record is not None else prints)
    if session is None:
        return ExitCode.FAILED
    lock: FolderLock | None = None
    try:
        try:
            # Modules the script imported are known now: none may be written over either.
            check_not_a_module(paths)
            attach_specs(session, specs)
            session.arm(conditions)
            if paths.record is not None:
                try:
                    lock = open_recording_folder(paths.record, script, overwrite=overwrite)
                except OutputError as exc:
                    raise OutputError(f"--record {paths.record_text}: {exc}") from None
        except (HookSpecError, BreakSpecError, OutputError) as exc:
            return report_refusal(args, str(exc))
        if args.eval:
            session.set_training(False)
        return _run(session, args, paths, prints, tee)
    finally:
        session.close()
        if lock is not None:
            lock.release()
        sys.stdout.flush()


def check_outputs(paths: OutputPaths, script: str, *, overwrite: bool = False) -> None:
    """Refuse (`OutputError`, naming both paths and what to do) outputs that would replace the
    script, a loaded module's source or each other, or that cannot be written. Creates
    nothing."""
    state, record = paths.state, paths.record
    suggestion = os.path.splitext(os.path.basename(script))[0] + ".pt"
    if state is not None:
        if same_file(state, script):
            raise OutputError(
                f"--save-state {paths.state_text} is the model script {script}"
                f"{_through_link(state)}: the state would replace it; save it elsewhere, "
                f"e.g. --save-state {suggestion}"
            )
        check_not_a_module(paths)
    if record is not None:
        tensors = os.path.join(record, TENSORS_FOLDER)
        if any(same_file(f, script) for f in recording_files(record)) or is_within(script, tensors):
            raise OutputError(
                f"--record {paths.record_text}{_through_link(record)} is the model script "
                f"{script} or would write over it: record to a new folder, e.g. --record "
                f"{os.path.splitext(os.path.basename(script))[0]}-recording"
            )
    if state is not None and record is not None:
        if same_file(state, record):
            raise OutputError(
                f"--save-state {paths.state_text} and --record {paths.record_text} name the same "
                f"path ({os.path.realpath(state)}): one would overwrite the other; give them "
                f"different paths, e.g. --save-state {suggestion}"
            )
        tensors = os.path.join(record, TENSORS_FOLDER)
        if any(same_file(state, f) for f in recording_files(record)) or is_within(state, tensors):
            raise OutputError(
                f"--save-state {paths.state_text} is a file the recording --record "
                f"{paths.record_text} writes: one would overwrite the other; save the state "
                f"elsewhere, e.g. --save-state {suggestion}"
            )
    # `--record R --save-state R/state.pt` with R new: R is made before the state is written.
    into_new_record = (
        state is not None
        and record is not None
        and not os.path.lexists(record)
        and os.path.dirname(os.path.abspath(state)) == os.path.abspath(record)
    )
    if state is not None and not into_new_record:
        try:
            check_writable(state)
        except OutputError as exc:
            raise OutputError(f"--save-state {paths.state_text}: {exc}") from None
    if record is not None:
        try:
            check_recording_folder(record, script, overwrite=overwrite)
        except OutputError as exc:
            raise OutputError(f"--record {paths.record_text}: {exc}") from None


def check_not_a_module(paths: OutputPaths) -> None:
    """Refuse a `--save-state` that is the source file of a module loaded in this process (a
    helper module the script imported, or one of the libraries')."""
    if paths.state is None:
        return
    name = loaded_module_of(paths.state)
    if name is not None:
        raise OutputError(
            f"--save-state {paths.state_text} is the source of module {name} "
            f"({os.path.realpath(paths.state)}), which this run imported: the state would "
            "replace it; save it elsewhere, e.g. --save-state state.pt"
        )


def _through_link(path: str) -> str:
    return f" (through the symlink {path})" if os.path.islink(path) else ""


class PlainRun:
    """The run's iterations straight from the session, the doctor watching them, and with
    `layers` each module's statistics (its hooks removed by `close`)."""

    def __init__(self, session: Session, *, layers: bool = False) -> None:
        self.session = session
        self.watcher = StepWatcher(session)
        self.ranks = RankWatcher(session.model, session.runner)  # inactive in one process
        self.initial = tuple(self.watcher.initial() + self.ranks.initial())
        self.layers = LayerWatch(session.model) if layers else None
        if self.layers is not None:
            self.layers.attach()

    def step(self) -> Iteration:
        result = self.session.run_iteration()
        found = []
        if result.record is not None:
            found = self.watcher.after_step(result.record)
            found += self.ranks.after_step(result.record.step)
        layers = None
        if self.layers is not None:
            if result.record is not None:
                layers = self.layers.take(result.record)
            else:
                self.layers.discard()
        return Iteration(result.events, result.record, result.error, tuple(found), layers)

    def close(self) -> None:
        if self.layers is not None:
            self.layers.detach()


def _run(
    session: Session,
    args: argparse.Namespace,
    paths: OutputPaths,
    prints: ScriptPrints,
    tee: PrintTee,
) -> int:
    stop = StopAtBreak()
    layers = bool(getattr(args, "layers", False))
    with StepProgress(0 if args.json else args.steps, prints) as progress:
        report = JsonReport() if args.json else TableReport(session, args.steps, progress)
        run: PlainRun | RecordedRun | None = None
        try:
            if paths.record is not None:
                run = RecordedRun(
                    session, paths.record, tee, tensors_limit=args.record_tensors, layers=layers
                )
            else:
                run = PlainRun(session, layers=layers)
            session.on_break = stop  # after the controller of --record has set its own
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
                if stop.event is not None:
                    # Nothing after the break: the run stops where it tripped, exit 1.
                    if isinstance(run, RecordedRun):
                        run.record_break(stop.event)
                    progress.stop()
                    report.broke(stop.event)
                    if QuietRank.active:
                        # This rank's stdout goes nowhere: say the break where its held
                        # stderr is written out (the exit status 1 shows it).
                        error_console().print(break_paragraph(stop.event), soft_wrap=True)
                    return ExitCode.FINDINGS
                assert it.record is not None
                report.step(it.record)
                if it.layers is not None:
                    report.layers(it.layers)
                for finding in it.findings:
                    report.finding(finding)
        except KeyboardInterrupt:
            progress.stop()
            report.close()  # what completed, then `modscope: interrupted` (cli.main)
            raise
        except OutputError as exc:  # the recording could not be written (a full disk)
            progress.stop()
            report.close()
            return report_refusal(args, str(exc), phase=RECORD, exc_type="OutputError")
        finally:
            if run is not None:
                run.close()
        progress.stop()
        report.close()
    if paths.state is not None:
        try:
            session.save_state(paths.state)
        except OutputError as exc:
            return report_refusal(args, str(exc), phase=SAVE, exc_type="OutputError")
        except Exception as exc:  # torch.save, or a `state_dict` hook of the script's, raised
            message = f"cannot write {paths.state}: {str(exc).strip() or type(exc).__name__}"
            return report_refusal(args, message, phase=SAVE, exc_type=type(exc).__name__)
    return ExitCode.OK
