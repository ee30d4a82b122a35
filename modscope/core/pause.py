"""Pause breakpoints: a `pause` hook blocks the worker thread until the user continues or quits."""

from __future__ import annotations

import threading
from collections.abc import Callable
from enum import Enum

from modscope.core.hooks import EventDraft, IterationAbandoned


class Resume(str, Enum):
    """How a paused iteration goes on."""

    CONTINUE = "continue"  # run on until the next pause hook, or the end of the phase
    RUN_THROUGH = "run-through"  # run on, skipping pause hooks, to the end of the request
    ABANDON = "abandon"  # unwind the iteration (quit or reload)


class PauseGate:
    """Blocks a `pause` hook (on the worker thread) until another thread resumes it.

    `on_pause(draft)` runs on the worker thread when a pause begins: the app posts a message
    from it. `resume()` and `abandon()` are called from the UI thread; `abandon()` also holds
    for pauses that have not begun yet (a quit while a step is still on its way to a pause), so
    the worker never blocks after the app has gone.
    """

    def __init__(self, on_pause: Callable[[EventDraft], None] | None = None) -> None:
        self.on_pause = on_pause
        self._condition = threading.Condition()
        self._decision: Resume | None = None
        self._paused: EventDraft | None = None
        self._closed = False
        self._skip = False

    @property
    def paused(self) -> EventDraft | None:
        """The hook firing the worker is stopped at, or None."""
        return self._paused

    def __call__(self, draft: EventDraft) -> None:
        """The `pause` callback a `HookManager` calls from inside the hook."""
        with self._condition:
            if self._closed:
                raise IterationAbandoned()
            if self._skip:
                return
            self._paused = draft
            self._decision = None
        if self.on_pause is not None:
            self.on_pause(draft)
        with self._condition:
            while self._decision is None:
                self._condition.wait()
            decision = self._decision
            self._paused = None
            self._decision = None
        if decision is Resume.ABANDON:
            raise IterationAbandoned()
        if decision is Resume.RUN_THROUGH:
            self._skip = True

    def resume(self, how: Resume = Resume.CONTINUE) -> bool:
        """Let the paused hook go on; False when nothing was paused."""
        with self._condition:
            if self._paused is None:
                return False
            self._decision = how
            self._condition.notify_all()
            return True

    def request_ended(self) -> None:
        """Called by the worker when the request a `RUN_THROUGH` ran to (a phase or a whole
        iteration) has completed: pause hooks stop the next request again."""
        with self._condition:
            self._skip = False

    def abandon(self) -> None:
        """Unwind a paused iteration now, and any later pause at once (on quit)."""
        with self._condition:
            self._closed = True
            self._decision = Resume.ABANDON
            self._condition.notify_all()

    def reopen(self) -> None:
        """Accept pauses again after an `abandon()` (a reload keeps the app running)."""
        with self._condition:
            self._closed = False
            self._decision = None
