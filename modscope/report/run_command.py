"""`modscope run`: N iterations headless, as JSON lines or readable tables."""

from __future__ import annotations

import argparse
import os
import sys
from collections.abc import Sequence
from dataclasses import dataclass, replace

from modscope.core.contract.break_spec import BreakSpecError, parse_conditions
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.steps import PhaseResult
from modscope.core.hooks.manager import HookSpec, HookSpecError, all_hooks_specs
from modscope.core.onlookers import Onlookers
from modscope.core.process_rank import launched_rank, rank_folder
from modscope.core.script.outputs import (
    FolderLock,
    OutputError,
    check_writable,
    is_within,
    loaded_module_of,
    same_file,
)
from modscope.core.session import Session
from modscope.report.breaks import StopAtBreak, break_paragraph
from modscope.report.common import (
    SAVE,
    ScriptPrints,
    error_console,
    load_session,
    report_refusal,
)
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
from modscope.report.run_reports import JsonReport, TableReport

RECORD = "record"
"""The `phase` of an error line for a `--record` that failed to write during the run."""


def parse_specs(texts: Sequence[str], all_hooks: bool) -> list[HookSpec]:
    specs = [HookSpec.parse(t) for t in texts]
    if all_hooks:
        specs = all_hooks_specs() + specs
    return specs


def attach_specs(session: Session, specs: Sequence[HookSpec]) -> None:
    for spec in specs:
        session.attach(spec)


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
    if paths.record is None:
        # Each record is reported as it comes and never read again: the session keeps none,
        # so no earlier record (26,400 summaries on a model of 13,000 modules) is alive while
        # the next is built.
        session = load_session(args, sink=prints, history=0)
    else:
        session = load_session(args, sink=tee)
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
    """The run's iterations straight from the session, with what looks on at them
    (`core.onlookers`: the doctor, the ranks, with `layers` each module's statistics)."""

    def __init__(self, session: Session, *, layers: bool = False) -> None:
        self.session = session
        self.onlookers = Onlookers(session, layers=layers)
        self.initial = self.onlookers.initial()

    def step(self) -> Iteration:
        """Run one iteration."""
        return self.observed(self.session.run_iteration())

    def observed(self, result: PhaseResult) -> Iteration:
        """What the onlookers saw of an iteration that ended (run here, or by the user's own
        loop under `modscope.watch()`)."""
        seen = self.onlookers.after(result.record)
        return Iteration(result.events, result.record, result.error, seen.findings, seen.layers)

    def close(self) -> None:
        self.onlookers.close()


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
                del it  # reported: not alive while the next record is built
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
