"""Ctrl-C with no step under way: ask before quitting, as a second Ctrl-C confirms."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.screen import ModalScreen
from textual.widgets import Button, Static


class QuitScreen(ModalScreen[bool]):
    """`y`, `q` or Ctrl-C again answer True (quit); `n` and `escape` answer False (stay)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,q", "answer(True)", "Quit", id="quit_yes"),
        Binding("n,escape", "answer(False)", "Stay", id="quit_no"),
    ]

    DEFAULT_CSS = """
    QuitScreen {
        align: center middle;
    }
    QuitScreen > Vertical {
        width: 56;
        max-width: 100%;
        height: auto;
        max-height: 100%;
        border: round $warning;
        background: $surface;
        padding: 0 1;
    }
    QuitScreen #quit-body {
        height: auto;
        margin-bottom: 1;
    }
    QuitScreen #quit-buttons {
        height: auto;
        align-horizontal: right;
    }
    QuitScreen Button {
        margin-left: 2;
    }
    """

    def __init__(self, paused: bool = False) -> None:
        super().__init__()
        self.paused = paused

    def compose(self) -> ComposeResult:
        body = "Quit modscope?"
        if self.paused:
            body += " The paused iteration is dropped."
        with Vertical() as box:
            box.border_title = Text("Ctrl-C")
            box.border_subtitle = Text("y / q / ctrl+c: quit · n / escape: stay")
            yield Static(Text(body), id="quit-body")
            with Horizontal(id="quit-buttons"):
                yield Button("Quit", variant="warning", id="quit", compact=True)
                yield Button("Stay", id="stay", compact=True)

    def on_mount(self) -> None:
        self.query_one("#stay", Button).focus()

    def action_answer(self, answer: bool) -> None:
        self.dismiss(answer)

    @on(Button.Pressed)
    def _pressed(self, event: Button.Pressed) -> None:
        self.dismiss(event.button.id == "quit")
