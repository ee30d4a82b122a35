"""Seeing the warnings PyTorch shows while an iteration runs, without swallowing any of them."""

from __future__ import annotations

import linecache
import os
import re
import sys
import threading
import warnings
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from types import FrameType
from typing import Any

import torch

from modscope.core.script.errors import is_user_file

_TORCH_DIR = os.path.dirname(os.path.realpath(torch.__file__))
_OWN_DIR = os.path.dirname(os.path.dirname(os.path.realpath(__file__)))
_WARN_CALL = re.compile(r"\bwarn(_explicit)?\s*\(")
_CPP_MARK = "Triggered internally at"
"""PyTorch's C++ warnings (TORCH_WARN) end with where in ATen they were raised."""


@dataclass(frozen=True)
class CapturedWarning:
    """One warning shown while an iteration ran, located in the user's code.

    `file`/`line`: the innermost frame of the user's own code on the stack when the warning was
    shown (None when only library code and modscope were running, e.g. an `nn.MSELoss()` given
    as `loss_fn` and called by modscope); `origin`: where the warning says it comes from (its
    own `filename:lineno`, which a `stacklevel` may point into torch).
    """

    category: str
    message: str
    origin: str
    file: str | None
    line: int | None
    from_torch: bool


class WarningCapture:
    """Records the warnings PyTorch shows while `capturing()` is entered, for the doctor.

    It wraps `warnings.showwarning` (the hook Python documents for this) and calls the one it
    wrapped, so every warning still reaches the user as before (stderr, pytest's recorder, a
    `catch_warnings(record=True)` around the session); filtered ones ("ignore", the "default"
    action's once per location, modscope's own filter of the legacy-backward-hook warning)
    never reach it. Only the thread that entered is recorded (the app's UI thread may warn
    meanwhile). Warnings the script raises itself, or other libraries, are shown but not kept:
    see `from_torch`.
    """

    def __init__(self) -> None:
        self._seen: list[CapturedWarning] = []

    @contextmanager
    def capturing(self) -> Iterator[None]:
        """Record the warnings shown in this thread until exit; the previous hook is restored."""
        previous = warnings.showwarning
        thread = threading.get_ident()

        def show(
            message: Warning | str,
            category: type[Warning],
            filename: str,
            lineno: int,
            file: Any = None,
            line: str | None = None,
        ) -> None:
            if threading.get_ident() == thread:
                self._record(message, category, filename, lineno, sys._getframe(1))
            previous(message, category, filename, lineno, file, line)

        warnings.showwarning = show
        try:
            yield
        finally:
            # Only our own hook comes off: one the script installed meanwhile stays.
            if warnings.showwarning is show:
                warnings.showwarning = previous

    def take(self) -> list[CapturedWarning]:
        """The warnings recorded since the last call (oldest first)."""
        out, self._seen = self._seen, []
        return out

    def _record(
        self,
        message: Warning | str,
        category: type[Warning],
        filename: str,
        lineno: int,
        frame: FrameType | None,
    ) -> None:
        try:
            issuer = _issuing_frame(frame)
            text = str(message)
            from_torch = _is_torch_warning(issuer, text)
            user = _user_location(issuer)
        except Exception:  # a frame we cannot read must not cost the user their warning
            return
        self._seen.append(
            CapturedWarning(
                category=category.__name__,
                message=text,
                origin=f"{filename}:{lineno}",
                file=user[0] if user else None,
                line=user[1] if user else None,
                from_torch=from_torch,
            )
        )


def _issuing_frame(frame: FrameType | None) -> FrameType | None:
    """The frame that called `warnings.warn` (or ran the op whose C++ code warned): the first
    one outside the warnings module."""
    while frame is not None and frame.f_code.co_filename == warnings.__file__:
        frame = frame.f_back
    return frame


def _is_torch_warning(issuer: FrameType | None, message: str) -> bool:
    """True for a warning PyTorch raised: from torch's Python code, or from its C++ core (no
    `warn(` call on the line that ran the op, or ATen's "Triggered internally at" mark)."""
    if _CPP_MARK in message:
        return True
    if issuer is None:
        return False
    filename = os.path.realpath(issuer.f_code.co_filename)
    if filename.startswith(_TORCH_DIR + os.sep):
        return True
    if filename.startswith(_OWN_DIR + os.sep) or not is_user_file(filename):
        return False  # modscope's own, or another library's
    source = linecache.getline(issuer.f_code.co_filename, issuer.f_lineno)
    return not _WARN_CALL.search(source)


def _user_location(frame: FrameType | None) -> tuple[str, int] | None:
    """The innermost frame of the user's own code, from `frame` outwards."""
    while frame is not None:
        if is_user_file(frame.f_code.co_filename):
            return frame.f_code.co_filename, frame.f_lineno
        frame = frame.f_back
    return None
