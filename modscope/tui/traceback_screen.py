"""The traceback of an internal error (a bug in modscope, not in the user's script)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.widgets import Static

from modscope.control.updates import InternalError
from modscope.core.contract.fmt import printable, printable_lines
from modscope.tui.modal import CentredModal


class TracebackScreen(CentredModal[None]):
    """The last internal error in full; `q` or `escape` closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close", "Close", id="close_traceback"),
    ]

    DEFAULT_CSS = """
    TracebackScreen > Vertical {
        width: 96%;
        max-height: 90%;
        border: round $error;
    }
    TracebackScreen VerticalScroll {
        height: auto;
        max-height: 100%;
    }
    """

    def __init__(self, error: InternalError) -> None:
        super().__init__()
        self.error = error

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text(printable(self.error.message, limit=120))
            log_file = printable(self.error.log_file) if self.error.log_file else ""
            where = f"also in {log_file} · " if log_file else ""
            box.border_subtitle = Text(f"{where}q / escape: close")
            with VerticalScroll():
                yield Static(Text(printable_lines(self.error.traceback)), id="traceback")
