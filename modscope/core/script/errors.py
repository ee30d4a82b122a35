"""Turning exceptions from the user's code into `UserError`s naming the user's file and line."""

from __future__ import annotations

import linecache
import os
import sys
import sysconfig
import traceback
from types import TracebackType

from modscope.core.contract.steps import Phase, UserError
from modscope.core.script.interrupts import describe_base_exception

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


class _Unprintable:
    """Stands for an object whose `repr` raised, in a message about it."""

    def __init__(self, obj: object) -> None:
        self.name = type(obj).__name__

    def __repr__(self) -> str:
        return f"<unprintable {self.name}>"

    __str__ = __repr__


def exception_text(exc: BaseException, *, loading: bool = False) -> str:
    """What `exc` says, in words: `describe_base_exception`'s for `sys.exit()` and the like,
    else `str(exc)`, else its type's name. The user's `__str__` (or an exit code's `__repr__`)
    may raise: the text then says `<unprintable RuntimeError>`, never raising itself."""
    try:
        words = describe_base_exception(exc, loading=loading)
    except Exception:
        code = exc.code if isinstance(exc, SystemExit) else None  # its repr raised
        words = describe_base_exception(SystemExit(_Unprintable(code)), loading=loading)
    if words:
        return words
    try:
        text = str(exc)
    except Exception:
        return repr(_Unprintable(exc))
    return text if isinstance(text, str) and text else type(exc).__name__


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
        message = exception_text(exc, loading=phase is Phase.LOAD)
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


def modscope_fault(
    exc: BaseException, *, phase: Phase, step: int, what: str, outcome: str
) -> UserError:
    """`exc`, raised by modscope's own work during an iteration (`what` it was doing), as an
    error that says so: no file or line of the user's, modscope's traceback, `internal`;
    `outcome` says where the iteration stands."""
    return UserError(
        message=f"{what}: {exception_text(exc)}",
        exc_type=type(exc).__name__,
        file=None,
        line=None,
        phase=phase,
        step=step,
        traceback="".join(traceback.format_exception(type(exc), exc, exc.__traceback__)),
        hint=f"This is a bug in modscope, not in your script: please report it with the "
        f"traceback. {outcome}",
        internal=True,
    )
