"""`modscope replay DIR --json`: a recording's events as `run --json` wrote them (the app opens
a recording without `--json`, in modscope.launch)."""

from __future__ import annotations

import argparse
import sys

from modscope.control import updates as up
from modscope.control.recording import Recording, RecordingError, read_ranks
from modscope.core.exit_codes import ExitCode
from modscope.core.loader import stderr_sink
from modscope.report.common import error_event, print_message, write_json_line
from modscope.report.step_json import write_step


def open_ranks(folder: str, *, json: bool = False) -> list[Recording]:
    """Every rank's recording at `folder` (one, or `rank0`, `rank1`, ... of a torchrun job), or
    none after saying why they cannot be read (on stderr, and as an error line on stdout under
    `--json`)."""
    try:
        ranks = read_ranks(folder)
    except RecordingError as exc:
        if json:
            write_json_line(error_event(str(exc), exc_type="RecordingError"))
        print_message(str(exc))
        return []
    for recording in ranks:
        if recording.torn:
            print_message(
                f"{recording.folder}: the recording was cut short while written; shown up to there"
            )
    return ranks


def replay_json(args: argparse.Namespace) -> int:
    """Print the recorded events as JSON lines; 2 when the recorded run failed (or the folder
    is no recording), else 0."""
    ranks = open_ranks(args.folder, json=True)
    if not ranks:
        return ExitCode.FAILED
    if not 0 <= args.rank < len(ranks):
        message = f"{args.folder} holds ranks 0 to {len(ranks) - 1}, not {args.rank}"
        write_json_line(error_event(message))
        print_message(message)
        return ExitCode.FAILED
    recording = ranks[args.rank]
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
