"""What the headless commands share: loading a session, printing errors, strict JSON lines."""

from __future__ import annotations

import argparse
import atexit
import contextlib
import json
import os
import re
import sys
import threading
from collections.abc import Iterable, Iterator
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from modscope.core.contract.bounded import HISTORY_LIMIT
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.contract.fmt import printable_lines
from modscope.core.contract.steps import UserError
from modscope.core.script.errors import ScriptError
from modscope.core.script.print_capture import STDERR_LINES, PrintSink, printing_to, stderr_sink
from modscope.core.session import Session, SessionOptions
from modscope.report.labels import error_text

# JSON escapes only C0 controls; these would reach a terminal raw (DEL, the C1 controls such as
# a one-byte CSI, bidi overrides, line separators) or cannot be encoded (lone surrogates).
_UNSAFE_IN_JSON = re.compile(
    "[\x7f-\x9f\u200b-\u200f\u2028-\u202e\u2060-\u206f\ufeff\ufff9-\ufffb\ud800-\udfff]"
)


def dumps(obj: Any) -> str:
    """Strict JSON on one line (no NaN/Infinity tokens: summaries carry them as null), with
    every character that could act on a terminal written as a `\\uXXXX` escape."""
    return terminal_safe(json.dumps(obj, allow_nan=False, ensure_ascii=False))


def terminal_safe(text: str) -> str:
    """JSON `text` with every character that could act on a terminal escaped (`dumps`)."""
    if text.isascii() and "\x7f" not in text:
        # DEL is the one unsafe ASCII character; both checks run at memory speed, where the
        # substitution scans character by character (a step record of a large model is MBs).
        return text
    return _UNSAFE_IN_JSON.sub(lambda m: f"\\u{ord(m.group()):04x}", text)


def write_json_line(obj: Any, stream: TextIO | None = None) -> None:
    write_json_text(dumps(obj), stream)


def write_json_text(text: str, stream: TextIO | None = None) -> None:
    """Write one JSON line already encoded (by `dumps`, or as `dumps` would), by default on the
    command's report stream (`report_output`)."""
    write_json_pieces((text,), stream)


def write_json_pieces(pieces: Iterable[str], stream: TextIO | None = None) -> None:
    """Write one JSON line given in pieces (`write_json_text`'s, never whole in memory)."""
    stream = stream or _report or sys.stdout
    for piece in pieces:
        stream.write(piece)
    stream.write("\n")
    stream.flush()


_report: TextIO | None = None
"""Where a headless command's report goes while `report_output` runs (None: `sys.stdout`)."""


@contextlib.contextmanager
def report_output(*, as_json: bool) -> Iterator[None]:
    """While a headless command runs, stdout is its report's alone: whatever the script and its
    threads write there goes to stderr.

    The report is written to a private duplicate of file descriptor 1, and descriptor 1 points
    at stderr meanwhile, so `os.write(1, ...)` and C extensions land on stderr, and a script's
    `os.close(1)` closes only that copy. Under `--json` (`as_json`), `sys.stdout` is a stream that
    writes each line on stderr with its control characters escaped, as captured prints are: a
    thread of the script that prints between iterations; otherwise `sys.stdout` is the report
    (rich's tables are written there). If threads the script started still run when the
    command ends, stdout stays pointed at stderr for them. Where `sys.stdout` is no file on
    descriptor 1 (a test's captured stream), only `sys.stdout` is swapped, under `--json`.
    """
    global _report
    saved = sys.stdout
    try:
        saved.flush()
        on_fd_1 = saved.fileno() == 1
    except (AttributeError, OSError, ValueError):  # no stream, or one on no file (io's own)
        on_fd_1 = False
    if not on_fd_1 and not as_json:
        yield
        return
    script_stdout = printing_to(stderr_sink)
    threads = set(threading.enumerate())
    private = os.dup(1) if on_fd_1 else None
    if private is None:
        _report = saved
    else:
        _report = open(  # noqa: SIM115 (closed below, or left to the process's end)
            private,
            "w",
            encoding=getattr(saved, "encoding", None),
            errors=getattr(saved, "errors", None),
            buffering=1 if getattr(saved, "line_buffering", False) else -1,
        )
        os.dup2(2, 1)
    sys.stdout = script_stdout if as_json else _report
    try:
        yield
    finally:
        report, _report = _report, None
        with contextlib.suppress(OSError, ValueError):  # the reader left: cli.main says so
            report.flush()
        script_stdout.flush()
        started = set(threading.enumerate()) - threads
        if private is not None and any(t.is_alive() for t in started):
            sys.stdout = script_stdout
            atexit.register(script_stdout.flush)
        else:
            sys.stdout = saved
            if private is not None:
                os.dup2(private, 1)
        if private is not None:
            with contextlib.suppress(OSError, ValueError):
                report.close()


def error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(error: UserError, *, show_traceback: bool = False) -> None:
    """A located error for a person, on stderr: file, line, step and phase, what to do."""
    text = Text("modscope: error: ", style="bold red")
    # modscope's own failure always shows its traceback: it is what a bug report needs.
    text.append_text(error_text(error, traceback=show_traceback or error.internal))
    if error.traceback and not (show_traceback or error.internal):
        text.append("\n(--traceback shows the full traceback)", style="dim")
    error_console().print(text)


def print_message(message: str) -> None:
    """A one-line error that is no exception of the user's (a bad flag value, a bad hook spec)."""
    text = Text("modscope: error: ", style="bold red")
    text.append(printable_lines(message))
    error_console().print(text)


ARGUMENTS = "arguments"
"""The `phase` of an error line for a refused command-line value (a flag, `--hook`, a path)."""
SAVE = "save"
"""The `phase` of an error line for a `--save-state` that failed to write after the run."""
USAGE_ERROR = "UsageError"
"""The `type` of an error line for a refused command-line value."""


def error_event(
    message: str,
    *,
    phase: str = ARGUMENTS,
    exc_type: str = USAGE_ERROR,
    step: int | None = None,
    file: str | None = None,
    line: int | None = None,
) -> dict[str, Any]:
    """An error line's object that no `UserError` carries: the same keys, in the same order."""
    return {
        "event": "error",
        "step": step,
        "phase": phase,
        "file": file,
        "line": line,
        "message": message,
        "type": exc_type,
    }


def write_json_failure(command: str | None, event: dict[str, Any]) -> None:
    """What `--json` writes on stdout when a command fails before producing its output.

    `run` writes the error line itself; `check` its one object with no findings, `steps_run` 0
    and the error (the shape of docs/design.md section 2); `tree` and `compat` an object
    `{"error": ...}`.
    """
    if command == "check":
        write_json_line({"findings": [], "steps_run": 0, "error": event})
    elif command in ("tree", "compat"):
        write_json_line({"error": event})
    else:
        write_json_line(event)


def _json_requested(args: argparse.Namespace) -> bool:
    return bool(getattr(args, "json", False))


def report_failure(args: argparse.Namespace, error: UserError) -> int:
    """A located error of the user's code: the paragraph on stderr, under `--json` also the
    command's JSON failure on stdout. Returns the exit status (2)."""
    if _json_requested(args):
        write_json_failure(getattr(args, "command", None), error.to_json())
    print_error(error, show_traceback=getattr(args, "traceback", False))
    return ExitCode.FAILED


def report_refusal(
    args: argparse.Namespace,
    message: str,
    *,
    phase: str = ARGUMENTS,
    exc_type: str = USAGE_ERROR,
    detail: UserError | None = None,
) -> int:
    """A refused command-line value (or a failed write): one line on stderr, under `--json`
    also the command's JSON failure on stdout (its `message`, `file` and `line` from `detail`
    when given). Returns the exit status (2)."""
    if _json_requested(args):
        event = error_event(message, phase=phase, exc_type=exc_type)
        if detail is not None:
            event.update(file=detail.file, line=detail.line, message=detail.message)
        write_json_failure(getattr(args, "command", None), event)
    print_message(message)
    return ExitCode.FAILED


class ScriptPrints:
    """The headless commands' sink for the script's prints: each line on stderr.

    While a progress bar shows, `console` is the bar's: the lines are printed there, in blocks
    (`STDERR_LINES`), above the bar, which redraws below them rather than being torn.
    """

    def __init__(self) -> None:
        self._console: Console | None = None

    @property
    def console(self) -> Console | None:
        return self._console

    @console.setter
    def console(self, console: Console | None) -> None:
        self._console = console
        if console is None:
            STDERR_LINES.route(None)
        else:
            # One print a block, not one a line: each print redraws the bar.
            STDERR_LINES.route(lambda text: console.print(Text(text[:-1]), soft_wrap=True))

    def __call__(self, line: str) -> None:
        stderr_sink(line)


def load_session(
    args: argparse.Namespace, *, sink: PrintSink = stderr_sink, history: int = HISTORY_LIMIT
) -> Session | None:
    """The session for a headless command, or None after reporting the load error (under
    `--json`, on stdout too). `history`: the most step records it keeps (`SessionOptions`)."""
    try:
        options = SessionOptions(
            sink=sink, memory_budget=getattr(args, "memory_budget", None), history=history
        )
        return Session.load(args.script, model_name=args.model, options=options)
    except ScriptError as exc:
        report_failure(args, exc.error)
        return None
