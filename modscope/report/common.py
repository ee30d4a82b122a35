"""What the headless commands share: loading a session, printing errors, strict JSON lines."""

from __future__ import annotations

import argparse
import json
import sys
from typing import Any, TextIO

from rich.console import Console
from rich.text import Text

from modscope.core.errors import ScriptError
from modscope.core.loader import stderr_sink
from modscope.core.session import Session
from modscope.core.types import UserError
from modscope.report.labels import error_text


def dumps(obj: Any) -> str:
    """Strict JSON (no NaN/Infinity tokens: summaries already carry them as null)."""
    return json.dumps(obj, allow_nan=False, ensure_ascii=False)


def write_json_line(obj: Any, stream: TextIO | None = None) -> None:
    stream = stream or sys.stdout
    stream.write(dumps(obj) + "\n")
    stream.flush()


def error_console() -> Console:
    return Console(stderr=True, highlight=False, soft_wrap=True)


def print_error(error: UserError, *, show_traceback: bool = False) -> None:
    """A located error for a person, on stderr: file, line, step and phase, what to do."""
    text = Text("modscope: error: ", style="bold red")
    text.append_text(error_text(error, traceback=show_traceback))
    if error.traceback and not show_traceback:
        text.append("\n(--traceback shows the full traceback)", style="dim")
    error_console().print(text)


def print_message(message: str) -> None:
    """A one-line error that is no exception of the user's (a bad flag value, a bad hook spec)."""
    text = Text("modscope: error: ", style="bold red")
    text.append(message)
    error_console().print(text)


def load_session(args: argparse.Namespace) -> Session | None:
    """The session for a headless command, or None after printing the load error."""
    try:
        return Session.load(args.script, model_name=args.model, sink=stderr_sink)
    except ScriptError as exc:
        print_error(exc.error, show_traceback=args.traceback)
        return None
