"""The user's code as it runs: its prints go to a sink (stderr by default), `os._exit` raises."""

from __future__ import annotations

import atexit
import contextlib
import io
import os
import sys
import threading
import time
from collections.abc import Callable, Iterator
from typing import Any, NoReturn

from modscope.core.contract.fmt import printable
from modscope.core.script.interrupts import ExitIntercepted

PrintSink = Callable[[str], None]


class _SinkWriter(io.TextIOBase):
    """A text stream that hands each complete line of the user's prints to a sink.

    Linear in what is printed: a write without a line end is kept as a piece, and pieces are
    joined once, when the line ends. A carriage return starts the line over, as on a terminal,
    so a progress line (`print(..., end="\\r")` many times) reaches the sink once, in its last
    state: the text after its last `\\r`, or the text before it when nothing followed.
    """

    def __init__(self, sink: PrintSink) -> None:
        self._sink = sink
        self._pieces: list[str] = []  # the line since its last carriage return
        self._overwritten = ""  # the line as it stood before that carriage return

    def writable(self) -> bool:
        return True

    def write(self, text: str) -> int:
        if text == "\n":  # print()'s own line end: the common case, kept cheap
            self._end_line()
        elif "\n" in text or "\r" in text:
            lines = text.split("\n")
            last = lines.pop()
            for line in lines:
                self._add(line)
                self._end_line()
            self._add(last)
        elif text:
            self._pieces.append(text)
        return len(text)

    def _add(self, text: str) -> None:
        if "\r" not in text:
            if text:
                self._pieces.append(text)
            return
        states = text.split("\r")
        self._pieces.append(states[0])
        for state in states[1:]:
            shown = "".join(self._pieces)
            if shown:
                self._overwritten = shown
            self._pieces = [state] if state else []

    def _end_line(self) -> None:
        line = "".join(self._pieces) or self._overwritten
        self._pieces = []
        self._overwritten = ""
        self._sink(line)

    def flush(self) -> None:
        if self._pieces or self._overwritten:
            self._end_line()


class _ExitGuard:
    """`os._exit` as the user's code sees it while it runs: it raises `ExitIntercepted`.

    os._exit ends the process at once: no error, no JSON error line, the status as given (0
    reads as success). Only the threads running the user's code (`captured_prints`) of this
    process raise; a forked child (a DataLoader worker) and other threads exit as asked. The
    real function is back once no thread runs the user's code.
    """

    def __init__(self) -> None:
        self._lock = threading.Lock()
        self._depths: dict[int, int] = {}  # thread ident -> nested `active()` blocks
        self._real = os._exit
        self._pid = 0

    @contextlib.contextmanager
    def active(self) -> Iterator[None]:
        me = threading.get_ident()
        with self._lock:
            if not self._depths:
                self._real, self._pid = os._exit, os.getpid()
                os._exit = self._exit
            self._depths[me] = self._depths.get(me, 0) + 1
        try:
            yield
        finally:
            with self._lock:
                self._depths[me] -= 1
                if not self._depths[me]:
                    del self._depths[me]
                if not self._depths:
                    os._exit = self._real

    def _exit(self, status: int) -> NoReturn:
        raising = os.getpid() == self._pid and threading.get_ident() in self._depths
        if raising and isinstance(status, int):
            raise ExitIntercepted(status)
        self._real(status)


_EXIT_GUARD = _ExitGuard()


@contextlib.contextmanager
def captured_prints(sink: PrintSink | None) -> Iterator[None]:
    """Run the user's code: what it prints goes to `sink` (stdout stays clean for JSON), and
    `os._exit()` raises `ExitIntercepted` rather than ending the process."""
    with _EXIT_GUARD.active():
        if sink is None:
            yield
            return
        writer = _SinkWriter(sink)
        try:
            with contextlib.redirect_stdout(writer):
                yield
        finally:
            writer.flush()
            STDERR_LINES.flush()


class _StderrLines:
    """The script's printed lines on stderr, each with its control characters escaped (a
    `\\x1b[2J` in a print must not clear the terminal).

    To a terminal each line is written at once. To a file or a pipe, or through a progress
    bar's console (`route`), they are written in blocks: at 64 KiB, when a line comes 0.1 s or
    more after the last block, and always by the end of each piece of the user's code
    (`captured_prints`), before modscope writes anything of its own.
    """

    BLOCK = 1 << 16
    LATEST = 0.1

    def __init__(self) -> None:
        self._held: list[str] = []
        self._size = 0
        self._at_once = False
        self._written_at = 0.0
        self._route: Callable[[str], None] | None = None
        self._lock = threading.Lock()

    def __call__(self, line: str) -> None:
        text = printable(line.expandtabs()) + "\n"
        with self._lock:
            if not self._held:  # asked once a block, not once a line (isatty is a system call)
                self._at_once = self._route is None and _stderr_is_terminal()
            self._held.append(text)
            self._size += len(text)
            if (
                self._size < self.BLOCK
                and not self._at_once
                and time.monotonic() - self._written_at < self.LATEST
            ):
                return
            held, self._held, self._size = self._held, [], 0
        self._write("".join(held))

    def flush(self) -> None:
        """Write the lines held so far."""
        with self._lock:
            if not self._held:
                return
            held, self._held, self._size = self._held, [], 0
        self._write("".join(held))

    def route(self, write: Callable[[str], None] | None) -> None:
        """Write the lines held so far, then hand each later block to `write` (lines that end
        in newlines) rather than to stderr: a progress bar's console, which redraws the bar
        below them (None: stderr again)."""
        self.flush()
        self._route = write

    def _write(self, text: str) -> None:
        self._written_at = time.monotonic()
        if self._route is not None:
            self._route(text)
            return
        stream = _stderr()
        with contextlib.suppress(OSError, ValueError):  # a closed stderr: nowhere left to say it
            stream.write(text)
            stream.flush()


def _stderr() -> Any:
    return sys.__stderr__ or sys.stderr


def _stderr_is_terminal() -> bool:
    try:
        return bool(_stderr().isatty())
    except (AttributeError, OSError, ValueError):
        return False


STDERR_LINES = _StderrLines()
atexit.register(STDERR_LINES.flush)


def printing_to(sink: PrintSink) -> io.TextIOBase:
    """A text stream that hands each line written to it to `sink`, as `captured_prints` does
    (call its `flush` for a last line without a line end)."""
    return _SinkWriter(sink)


def stderr_sink(line: str) -> None:
    """The headless commands' sink: the script's prints go to stderr, each line with its
    control characters escaped (`_StderrLines`)."""
    STDERR_LINES(line)
