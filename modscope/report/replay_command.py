"""`modscope replay DIR --json`: a recording's events as `run --json` wrote them (the app opens
a recording without `--json`, in modscope.launch)."""

from __future__ import annotations

import argparse
import sys

from modscope.control import updates as up
from modscope.control.recording import Recording, RecordingError, read_recording
from modscope.core.exit_codes import ExitCode
from modscope.core.loader import stderr_sink
from modscope.report.common import error_event, print_message, write_json_line


def open_recording(folder: str, *, json: bool = False) -> Recording | None:
    """The recording at `folder`, or None after saying why it cannot be read (on stderr, and
    as an error line on stdout under `--json`)."""
    try:
        recording = read_recording(folder)
    except RecordingError as exc:
        if json:
            write_json_line(error_event(str(exc), exc_type="RecordingError"))
        print_message(str(exc))
        return None
    if recording.torn:
        print_message(f"{folder}: the recording was cut short while written; shown up to there")
    return recording


def replay_json(args: argparse.Namespace) -> int:
    """Print the recorded events as JSON lines; 2 when the recorded run failed (or the folder
    is no recording), else 0."""
    recording = open_recording(args.folder, json=True)
    if recording is None:
        return ExitCode.FAILED
    status = ExitCode.OK
    for u in recording.updates():
        if isinstance(u, up.Printed):
            stderr_sink(u.line)
        elif isinstance(u, up.HookEventsSeen):
            for event in u.events:
                write_json_line(event.to_json())
        elif isinstance(u, up.PhaseDone):
            if u.record is not None:
                write_json_line(u.record.to_json())
            if u.error is not None:
                write_json_line(u.error.to_json())
                status = ExitCode.FAILED
        elif isinstance(u, up.FindingsChanged):
            for finding in u.new:
                write_json_line({"event": "finding", "step": finding.step, **finding.to_json()})
        elif isinstance(u, up.LoadFailed):
            write_json_line(u.error.to_json())
            status = ExitCode.FAILED
    sys.stdout.flush()
    return status
