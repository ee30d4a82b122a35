"""`modscope replay DIR --json`: a recording's events as `run --json` wrote them (the app opens
a recording without `--json`, in modscope.launch)."""

from __future__ import annotations

import argparse
import sys

from modscope.control import updates as up
from modscope.control.recording import Recording, RecordingError, read_ranks
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.script.print_capture import stderr_sink
from modscope.report.common import error_event, print_message, write_json_line
from modscope.report.step_json import write_step


def open_ranks(folder: str, *, json: bool = False, raise_error: bool = False) -> list[Recording]:
    """Every rank's recording at `folder` (one, or `rank0`, `rank1`, ... of a torchrun job), or
    none after saying why they cannot be read (on stderr, and as an error line on stdout under
    `--json`); `raise_error` raises the `RecordingError` instead (the app shows it)."""
    try:
        ranks = read_ranks(folder)
    except RecordingError as exc:
        if raise_error:
            raise
        if json:
            event = error_event(str(exc), exc_type="RecordingError", file=exc.file, line=exc.line)
            write_json_line(event)
        print_message(str(exc))
        return []
    for recording in ranks:
        if recording.torn:
            print_message(
                f"{recording.folder}: the recording was cut short while written; shown up to there"
            )
    return ranks


def rank_numbers(ranks: list[Recording]) -> list[int]:
    """The rank of each recording read by `open_ranks` (0 for a one-process recording)."""
    return [i if r.rank is None else r.rank for i, r in enumerate(ranks)]


def missing_rank(folder: str, held: list[int], wanted: int) -> str:
    """What to say when `--rank wanted` names no rank that `folder` holds."""
    if held == list(range(len(held))):
        return f"{folder} holds ranks 0 to {len(held) - 1}, not {wanted}"
    listed = ", ".join(str(r) for r in held[:-1]) + f" and {held[-1]}" if held[1:] else ""
    holds = f"ranks {listed}" if listed else f"rank {held[0]} only"
    return f"{folder} has no rank {wanted} (no rank{wanted} folder): it holds {holds}"


def replay_json(args: argparse.Namespace) -> int:
    """Print the recorded events as JSON lines; 2 when the recorded run failed (or the folder
    is no recording), else 0."""
    ranks = open_ranks(args.folder, json=True)
    if not ranks:
        return ExitCode.FAILED
    held = rank_numbers(ranks)
    if args.rank not in held:
        message = missing_rank(args.folder, held, args.rank)
        write_json_line(error_event(message))
        print_message(message)
        return ExitCode.FAILED
    recording = ranks[held.index(args.rank)]
    status = ExitCode.OK
    for u in recording.updates():
        if isinstance(u, up.Printed):
            stderr_sink(u.line)
        elif isinstance(u, up.HookEventsSeen):
            for event in u.events:
                write_json_line(event.to_json())
        elif isinstance(u, up.PhaseDone):
            if u.record is not None:
                write_step(u.record)
            if u.error is not None:
                write_json_line(u.error.to_json())
                status = ExitCode.FAILED
        elif isinstance(u, up.LayersSeen):
            write_json_line(u.step.to_json())
        elif isinstance(u, up.FindingsChanged):
            for finding in u.new:
                write_json_line({"event": "finding", "step": finding.step, **finding.to_json()})
        elif isinstance(u, up.BreakHit):
            write_json_line(u.event.to_json())
            status = ExitCode.FINDINGS  # as `run --break` exits
        elif isinstance(u, up.LoadFailed):
            write_json_line(u.error.to_json())
            status = ExitCode.FAILED
    sys.stdout.flush()
    return status
