"""The status line: script, step, next phase, train/eval, loss, output, running or paused."""

from __future__ import annotations

from textual.widgets import Static

from modscope.tui import labels
from modscope.tui.updates import SessionStatus


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

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.status: SessionStatus | None = None

    def show(self, status: SessionStatus) -> None:
        if status != self.status:
            self.status = status
            self.update(labels.status_text(status))

    @property
    def text(self) -> str:
        return labels.status_text(self.status).plain if self.status else ""
