"""Telling a real Ctrl-C from a `KeyboardInterrupt` that the user's code raised itself.

User code can raise `KeyboardInterrupt` (or call `sys.exit()`) inside a forward; modscope turns
that into a located user error like any other exception. A real Ctrl-C must still stop a
headless run: while `catching_ctrl_c()` is active, SIGINT raises a `KeyboardInterrupt` marked as
coming from the signal. On other threads a `KeyboardInterrupt` never comes from a signal.
"""

from __future__ import annotations

import signal
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from types import FrameType

_MARK = "_modscope_from_signal"
_installed = threading.Event()


@contextmanager
def catching_ctrl_c() -> Iterator[None]:
    """Mark the `KeyboardInterrupt` a SIGINT raises (main thread only; elsewhere a no-op)."""
    if threading.current_thread() is not threading.main_thread():
        yield
        return
    previous = signal.getsignal(signal.SIGINT)

    def on_sigint(signum: int, frame: FrameType | None) -> None:
        exc = KeyboardInterrupt()
        setattr(exc, _MARK, True)
        raise exc

    signal.signal(signal.SIGINT, on_sigint)
    _installed.set()
    try:
        yield
    finally:
        _installed.clear()
        signal.signal(signal.SIGINT, previous)


def is_real_interrupt(exc: BaseException) -> bool:
    """True for a Ctrl-C a person pressed (it must stop the run), False for anything the
    user's code raised. Without `catching_ctrl_c()`, a `KeyboardInterrupt` on the main thread
    is taken as a real one."""
    if not isinstance(exc, KeyboardInterrupt):
        return False
    if getattr(exc, _MARK, False):
        return True
    return not _installed.is_set() and threading.current_thread() is threading.main_thread()


def describe_base_exception(exc: BaseException, *, loading: bool = False) -> str | None:
    """Words for the exceptions that are not `Exception`s, when the user's code raised one
    (`loading`: at the script's top level, before any iteration)."""
    when = " while the script loaded" if loading else ""
    who = "the script" if loading else "the code"
    if isinstance(exc, SystemExit):
        return f"sys.exit({exc.code!r}) was called{when}; modscope caught it"
    if isinstance(exc, KeyboardInterrupt):
        return f"KeyboardInterrupt was raised by {who} (not by Ctrl-C){when}; modscope caught it"
    if isinstance(exc, GeneratorExit):
        return f"GeneratorExit was raised outside a generator's close(){when}; modscope caught it"
    if not isinstance(exc, Exception):
        return f"{type(exc).__name__} (a BaseException) was raised{when}; modscope caught it"
    return None
