"""The status line: script, step, next phase, train/eval, loss, output, running or paused."""

from __future__ import annotations

from textual.reactive import reactive
from textual.widgets import Static

from modscope.control.updates import SessionStatus
from modscope.tui import labels


class StatusLine(Static):
    """One line, redrawn from each `SessionStatus` the worker sends."""

    DEFAULT_CSS = """
    StatusLine {
        height: 1;
        width: 1fr;
        padding: 0 1;
        background: $panel;
    }
    """

    status: reactive[SessionStatus | None] = reactive(None, init=False, repaint=False)
    """The status shown; an equal one (the same snapshot sent again) redraws nothing."""

    def show(self, status: SessionStatus) -> None:
        self.status = status

    def watch_status(self, status: SessionStatus | None) -> None:
        self.update(labels.status_text(status) if status is not None else "")

    @property
    def text(self) -> str:
        return labels.status_text(self.status).plain if self.status else ""
