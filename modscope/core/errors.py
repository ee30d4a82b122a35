"""Turning exceptions from the user's code into `UserError`s naming the user's file and line."""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import traceback
from types import TracebackType

from modscope.core.interrupts import describe_base_exception
from modscope.core.types import Phase, UserError

_PACKAGE_DIR = os.path.dirname(os.path.dirname(os.path.abspath(__file__)))


def _library_dirs() -> tuple[str, ...]:
    dirs = {_PACKAGE_DIR}
    for key in ("stdlib", "platstdlib", "purelib", "platlib"):
        path = sysconfig.get_paths().get(key)
        if path:
            dirs.add(os.path.realpath(path))
    for path in sys.path:
        if path.endswith("site-packages") or path.endswith("dist-packages"):
            dirs.add(os.path.realpath(path))
    return tuple(sorted(dirs))


_LIBRARY_DIRS = _library_dirs()


def is_user_file(filename: str) -> bool:
    """True for a file the user wrote: not modscope, not the stdlib, not an installed package."""
    if not filename or filename.startswith("<"):
        return False
    real = os.path.realpath(filename)
    return not any(real == d or real.startswith(d + os.sep) for d in _LIBRARY_DIRS)


def user_frame(tb: TracebackType | None, prefer: str | None = None) -> tuple[str, int] | None:
    """The deepest traceback frame in the user's code, preferring the file `prefer` when present."""
    frames = traceback.extract_tb(tb)
    if prefer:
        want = os.path.realpath(prefer)
        mine = [f for f in frames if f.filename and os.path.realpath(f.filename) == want]
        if mine:
            return mine[-1].filename, mine[-1].lineno or 0
    users = [f for f in frames if is_user_file(f.filename)]
    if users:
        return users[-1].filename, users[-1].lineno or 0
    return None


class ModscopeError(Exception):
    """An error modscope reports to a person as it is, without a traceback."""


class ScriptError(ModscopeError):
    """The user's script failed; carries the located `UserError`."""

    def __init__(self, error: UserError) -> None:
        super().__init__(error.describe())
        self.error = error


def user_error(
    exc: BaseException,
    *,
    phase: Phase,
    step: int | None = None,
    script: str | None = None,
    hint: str | None = None,
) -> UserError:
    """Locate `exc` in the user's code (a SyntaxError by its own position)."""
    file: str | None = None
    line: int | None = None
    if isinstance(exc, SyntaxError) and exc.filename:
        file, line = exc.filename, exc.lineno
        message = exc.msg
    else:
        found = user_frame(exc.__traceback__, prefer=script)
        if found:
            file, line = found
        words = describe_base_exception(exc, loading=phase is Phase.LOAD)
        message = words or str(exc) or type(exc).__name__
    source = linecache.getline(file, line).rstrip() if file and line else None
    if isinstance(exc, SyntaxError) and exc.text and not source:
        source = exc.text.rstrip()
    return UserError(
        message=message.strip(),
        exc_type=type(exc).__name__,
        file=file if file else script,
        line=line,
        phase=phase,
        step=step,
        source_line=source or None,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        hint=hint,
    )
