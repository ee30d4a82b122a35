"""Telling a real Ctrl-C from a `KeyboardInterrupt` that the user's code raised itself.

User code can raise `KeyboardInterrupt` (or call `sys.exit()`) inside a forward; modscope turns
that into a located user error like any other exception. A real Ctrl-C must still stop a
headless run: while `catching_ctrl_c()` is active, SIGINT raises a `KeyboardInterrupt` marked as
coming from the signal. On other threads a `KeyboardInterrupt` never comes from a signal.

A script may install its own SIGINT handler (a training loop's graceful stop, or
`signal.default_int_handler`, whose `KeyboardInterrupt` carries no mark). Meanwhile that handler
is kept aside, not installed: `signal.signal(SIGINT, ...)` and `signal.getsignal(SIGINT)` on the
main thread see the script's handler, while the process keeps modscope's, so a Ctrl-C always
stops the command. The handler from before modscope is back when the command ends.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType
from typing import Any

_MARK = "_modscope_from_signal"
_installed = threading.Event()


@contextmanager
def catching_ctrl_c() -> Iterator[None]:
    """Mark the `KeyboardInterrupt` a SIGINT raises (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    real_signal, real_getsignal = signal.signal, signal.getsignal
    previous = real_getsignal(signal.SIGINT)
    scripts = _ScriptsHandler(previous, real_signal, real_getsignal)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        exc = KeyboardInterrupt()
        setattr(exc, _MARK, True)
        raise exc

    real_signal(signal.SIGINT, on_sigint)
    signal.signal, signal.getsignal = scripts.signal, scripts.getsignal
    _installed.set()
    try:
        yield
    finally:
        _installed.clear()
        scripts.active = False  # a copy of the functions taken meanwhile goes straight through
        signal.signal, signal.getsignal = real_signal, real_getsignal
        real_signal(signal.SIGINT, previous)


class _ScriptsHandler:
    """`signal.signal` and `signal.getsignal` as the script sees them while modscope holds
    SIGINT: the script's SIGINT handler is kept here; every other call goes through."""

    def __init__(self, handler: Any, real_signal: Any, real_getsignal: Any) -> None:
        self.handler = handler
        self.active = True
        self._signal = real_signal
        self._getsignal = real_getsignal

    def _kept(self, signalnum: object) -> bool:
        return (
            self.active
            and signalnum == signal.SIGINT
            and threading.current_thread() is threading.main_thread()
        )

    def signal(self, signalnum: int, handler: Any) -> Any:
        if not self._kept(signalnum):
            return self._signal(signalnum, handler)
        if not callable(handler) and handler not in (signal.SIG_IGN, signal.SIG_DFL):
            raise TypeError(
                "signal handler must be signal.SIG_IGN, signal.SIG_DFL, or a callable object"
            )
        previous, self.handler = self.handler, handler
        return previous

    def getsignal(self, signalnum: int) -> Any:
        if not self._kept(signalnum):
            return self._getsignal(signalnum)
        return self.handler


def is_real_interrupt(exc: BaseException) -> bool:
    """True for a Ctrl-C a person pressed (it must stop the run), False for anything the
    user's code raised. Without `catching_ctrl_c()`, a `KeyboardInterrupt` on the main thread
    is taken as a real one."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    if getattr(exc, _MARK, False):
        return True
    return not _installed.is_set() and threading.current_thread() is threading.main_thread()


class ExitIntercepted(BaseException):
    """Raised in place of `os._exit(status)` called by the user's code while modscope runs it
    (`modscope.core.script.print_capture.captured_prints`): the process would end at once, with no
    error."""

    def __init__(self, status: int) -> None:
        super().__init__(status)
        self.status = status


def describe_base_exception(exc: BaseException, *, loading: bool = False) -> str | None:
    """Words for the exceptions that are not `Exception`s, when the user's code raised one
    (`loading`: at the script's top level, before any iteration)."""
    when = " while the script loaded" if loading else ""
    who = "the script" if loading else "the code"
    if isinstance(exc, ExitIntercepted):
        return f"os._exit({exc.status!r}) was called{when}; modscope caught it"
    if isinstance(exc, SystemExit):
        return f"sys.exit({exc.code!r}) was called{when}; modscope caught it"
    if isinstance(exc, KeyboardInterrupt):
        return f"KeyboardInterrupt was raised by {who} (not by Ctrl-C){when}; modscope caught it"
    if isinstance(exc, GeneratorExit):
        return f"GeneratorExit was raised outside a generator's close(){when}; modscope caught it"
    if not isinstance(exc, Exception):
        return f"{type(exc).__name__} (a BaseException) was raised{when}; modscope caught it"
    return None
