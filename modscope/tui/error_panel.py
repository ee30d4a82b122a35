"""The error panel: the last error raised by the user's code while stepping, until it is fixed."""

from __future__ import annotations

from rich.text import Text
from textual.reactive import reactive
from textual.widgets import Static

from modscope.core.contract.steps import UserError
from modscope.tui import labels


class ErrorPanel(Static):
    """Hidden until the user's code raises; `escape` or the next good step hides it."""

    DEFAULT_CSS = """
    ErrorPanel {
        display: none;
        height: auto;
        max-height: 8;
        border: round $error;
        border-title-color: $error;
        padding: 0 1;
        overflow-y: auto;
    }
    ErrorPanel.-shown {
        display: block;
    }
    """

    error: reactive[UserError | None] = reactive(None, init=False, repaint=False, bindings=True)
    """The error shown; None hides the panel (and `escape`, which hides it, from the footer)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self._script = ""

    def show(self, error: UserError | None, script: str) -> None:
        self._script = script
        self.error = error

    def watch_error(self, error: UserError | None) -> None:
        self.set_class(error is not None, "-shown")
        if error is not None:
            who = "modscope failed" if error.internal else "The script raised"
            self.border_title = Text(f"{who} (the session goes on)")
            self.update(labels.error_text(error, self._script))

    @property
    def text(self) -> str:
        return labels.error_text(self.error, self._script).plain if self.error else ""
