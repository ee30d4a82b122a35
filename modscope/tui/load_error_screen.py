"""The screen shown when the script does not load: file, line, source line and message."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.screen import Screen
from textual.widgets import Footer, Static

from modscope.core.contract.steps import UserError
from modscope.tui import labels


class LoadErrorScreen(Screen[None]):
    """`r` retries after an edit; `q` quits (status 2 when the script never loaded)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("r", "app.reload", "Retry", id="retry"),
        Binding("q", "app.quit", "Quit", id="quit_error"),
    ]

    DEFAULT_CSS = """
    LoadErrorScreen {
        align: center middle;
    }
    LoadErrorScreen > Vertical {
        width: 100;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $error;
        border-title-color: $error;
        padding: 0 1;
        overflow-y: auto;
    }
    """

    def __init__(
        self, error: UserError, script: str, *, traceback: bool = False, replay: bool = False
    ) -> None:
        super().__init__()
        self.error = error
        self.script = script
        self.traceback = traceback
        self.replay = replay
        """A recording that `modscope replay` cannot read, rather than a script."""

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text(
                "The recording cannot be replayed" if self.replay else "The script did not load"
            )
            yield Static(
                labels.error_text(self.error, self.script, traceback=self.traceback),
                id="load-error",
            )
            hint = "q quits." if self.replay else "r loads the script again after an edit; q quits."
            yield Static(Text(hint, style="dim"))
        yield Footer()

    def show(self, error: UserError) -> None:
        self.error = error
        self.query_one("#load-error", Static).update(
            labels.error_text(error, self.script, traceback=self.traceback)
        )

    @property
    def text(self) -> str:
        return labels.error_text(self.error, self.script).plain
