"""A yes/no question before something modscope cannot undo (detaching a hook it did not add)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.widgets import Button, Static

from modscope.tui.modal import CentredModal


class ConfirmScreen(CentredModal[bool]):
    """`y` (or the focused Yes) answers True; `n`, `q` and `escape` answer False."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y", "answer(True)", "Yes", id="confirm_yes"),
        Binding("n", "answer(False)", "No", id="confirm_no"),
        Binding("q", "answer(False)", "Close", id="confirm_close"),
    ]

    AUTO_FOCUS = "#no"

    DEFAULT_CSS = """
    ConfirmScreen > Vertical {
        width: 72;
        max-width: 100%;
        max-height: 100%;
        border: round $warning;
    }
    ConfirmScreen #confirm-body {
        height: auto;
        margin-bottom: 1;
    }
    ConfirmScreen #confirm-buttons {
        height: auto;
        align-horizontal: right;
    }
    ConfirmScreen Button {
        margin-left: 2;
    }
    """

    KEYS: ClassVar[tuple[str, str]] = ("y", "n / q / escape")
    """The keys that answer yes and no, as the subtitle names them (they follow BINDINGS)."""

    def __init__(self, title: str, body: Text, yes: str = "Yes", no: str = "No") -> None:
        super().__init__()
        self.title_text = title
        self.body = body
        self.yes = yes
        self.no = no

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text(self.title_text)
            yes_keys, no_keys = self.KEYS
            box.border_subtitle = Text(
                f"{yes_keys}: {self.yes.lower()} · {no_keys}: {self.no.lower()}"
            )
            yield Static(self.body, id="confirm-body")
            with Horizontal(id="confirm-buttons"):
                yield Button(self.yes, variant="warning", id="yes", compact=True)
                yield Button(self.no, id="no", compact=True)

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    def action_close(self) -> None:
        self.dismiss(False)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "yes")

    @property
    def text(self) -> str:
        return self.body.plain
