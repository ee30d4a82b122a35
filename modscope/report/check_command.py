"""`modscope check`: the doctor's findings, readable on a terminal or as one strict JSON object."""

from __future__ import annotations

import argparse
import sys
from collections.abc import Sequence

from rich.console import Console, Group, RenderableType
from rich.padding import Padding
from rich.text import Text

from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.findings import Finding, Severity
from modscope.core.contract.fmt import plural, printable, printable_lines
from modscope.core.contract.steps import Phase
from modscope.core.doctor import CheckResult, run_checks
from modscope.core.script.errors import user_error
from modscope.core.script.interrupts import is_real_interrupt
from modscope.core.session import Session
from modscope.report.common import (
    error_console,
    load_session,
    print_error,
    report_refusal,
    write_json_line,
)
from modscope.report.ranks import on_rank_zero
from modscope.report.styles import SEVERITY_MARK, SEVERITY_STYLE

_HEADINGS = {Severity.ERROR: "errors", Severity.WARNING: "warnings", Severity.INFO: "info"}


def finding_block(f: Finding) -> RenderableType:
    """One finding: its mark, kind and path on a line, then the message and the fix, indented.

    Every piece of user text (paths, messages naming the user's modules) is a `Text`, never
    markup: `blocks[attn]` shows as typed.
    """
    style = SEVERITY_STYLE[f.severity]
    head = Text()
    head.append(f"{SEVERITY_MARK[f.severity]} ", style=style)
    head.append(f.kind.value, style=style)
    head.append("  ")
    head.append(printable(f.path) if f.path else "(model)", style="bold")
    if f.step:
        head.append(f"  step {f.step}", style="dim")
    body = Text(printable_lines(f.message))
    fix = Text("fix: ", style="green")
    fix.append(printable_lines(f.fix))
    return Group(head, Padding(Group(body, fix), (0, 0, 0, 4), expand=False))


def counts_line(findings: Sequence[Finding]) -> Text:
    """`1 error, 2 warnings, 0 info`."""
    n = {s: sum(1 for f in findings if f.severity is s) for s in Severity}
    errors = n[Severity.ERROR]
    warnings = n[Severity.WARNING]
    text = Text()
    text.append(plural(errors, "error"), style=SEVERITY_STYLE[Severity.ERROR] if errors else "")
    text.append(", ")
    text.append(
        plural(warnings, "warning"), style=SEVERITY_STYLE[Severity.WARNING] if warnings else ""
    )
    text.append(f", {n[Severity.INFO]} info")
    return text


def findings_report(findings: Sequence[Finding], *, title: str | None = None) -> RenderableType:
    """Findings grouped by severity (errors, then warnings, then info), then the counts line."""
    parts: list[RenderableType] = []
    if title:
        parts.append(Text(title, style="bold"))
    for severity in Severity:
        group = [f for f in findings if f.severity is severity]
        if not group:
            continue
        parts.append(Text(f"{_HEADINGS[severity]} ({len(group)})", style=SEVERITY_STYLE[severity]))
        parts.extend(finding_block(f) for f in group)
        parts.append(Text(""))
    if not findings:
        parts.append(Text("no findings", style="green"))
    parts.append(counts_line(findings))
    return Group(*parts)


def result_json(result: CheckResult) -> dict[str, object]:
    """docs/design.md section 2's `check --json` object (plus `error` when an iteration failed)."""
    out: dict[str, object] = {
        "findings": [f.to_json() for f in result.findings],
        "steps_run": result.steps_run,
    }
    if result.error is not None:
        out["error"] = result.error.to_json()
    return out


def check_command(args: argparse.Namespace) -> int:
    """Load the script, run the doctor; 0 no error-level finding, 1 some, 2 a failure. Under
    torchrun, rank 0 reports and the others only when they fail (exit status not 0), with
    their report, each line naming the rank."""
    return on_rank_zero(_check_command, args, hold_stdout=True)


def _check_command(args: argparse.Namespace) -> int:
    session = load_session(args)
    if session is None:
        return ExitCode.FAILED
    try:
        try:
            result = run_checks(session, steps=args.steps)
        except BaseException as exc:
            # The doctor's own passes (the eval-mode probe, copying the model) run the script's
            # code outside `Session.run_phase`; sys.exit() or a KeyboardInterrupt of its own
            # there must not end the command silently. A real Ctrl-C and modscope's bugs go on.
            if isinstance(exc, Exception) or is_real_interrupt(exc):
                raise
            return _escaped(args, session, exc)
        if args.json:
            write_json_line(result_json(result))
            if result.notes:
                notes = error_console()
                for note in result.notes:
                    notes.print(Text(f"modscope check: {printable_lines(note)}", style="dim"))
        else:
            console = Console(highlight=False)
            ran = f"{plural(result.steps_run, 'step')} run"
            if result.error is not None:
                # Said first: the findings below are only those of the steps before it.
                ran += f"; step {result.error.step or result.steps_run + 1} raised, below"
            title = f"modscope check {printable(args.script)} ({ran})"
            console.print(Text(title, style="bold"))
            for line in (result.where, *result.notes):
                if line:
                    console.print(Text(printable_lines(line), style="dim"))
            console.print()
            console.print(findings_report(result.findings))
        if result.error is not None:
            print_error(result.error, show_traceback=args.traceback)
            return ExitCode.FAILED
        return ExitCode.FINDINGS if result.has_errors else ExitCode.OK
    finally:
        session.close()
        sys.stdout.flush()


def _escaped(args: argparse.Namespace, session: Session, exc: BaseException) -> int:
    """Exit 2 for a `BaseException` the script raised during the doctor's own passes."""
    error = user_error(exc, phase=Phase.FORWARD, script=session.script.path)
    where = error.file or "?"
    if error.line:
        where += f", line {error.line}"
    message = f"{error.exc_type} in {where} (during the checks' own passes): {error.message}"
    return report_refusal(
        args, message, phase=Phase.FORWARD.value, exc_type=error.exc_type, detail=error
    )
