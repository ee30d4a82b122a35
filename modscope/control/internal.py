"""Internal errors (bugs in modscope, not in the user's script) as updates, with the traceback
kept for the log pane and written to a log file."""

from __future__ import annotations

import os
import tempfile
import time
import traceback

from modscope.control.updates import InternalError
from modscope.core.script.errors import exception_text


def log_path() -> str:
    """Where this process writes the tracebacks of internal errors."""
    return os.path.join(tempfile.gettempdir(), f"modscope-{os.getpid()}.log")


def internal_error(exc: BaseException, *, what: str = "modscope internal error") -> InternalError:
    """`exc` as an update; its traceback is appended to `log_path()` (when writable)."""
    trace = "".join(traceback.format_exception(exc))
    return logged(f"{what}: {type(exc).__name__}: {exception_text(exc)}", trace, what=what)


def logged(message: str, trace: str, *, what: str) -> InternalError:
    """An internal error saying `message`, its `trace` appended to `log_path()` (when
    writable): also for one the session reported (`UserError.internal`)."""
    path: str | None = log_path()
    try:
        with open(path, "a", encoding="utf-8") as log:  # type: ignore[arg-type]
            log.write(f"--- {time.strftime('%Y-%m-%d %H:%M:%S')} {what}\n{trace}\n")
    except OSError:
        path = None
    return InternalError(message, trace, path)
