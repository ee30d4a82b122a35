"""Ctrl-C with no step under way: ask before quitting, as a second Ctrl-C confirms."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType

from modscope.tui.confirm_screen import ConfirmScreen


class QuitScreen(ConfirmScreen):
    """`y`, `q` or Ctrl-C again answer True (quit); `n` and `escape` answer False (stay)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("y,q", "answer(True)", "Quit", id="quit_yes"),
        Binding("n", "answer(False)", "Stay", id="quit_no"),
    ]
    KEYS = ("y / q / ctrl+c", "n / escape")

    def __init__(self, paused: bool = False) -> None:
        body = "Quit modscope?"
        if paused:
            body += " The paused iteration is dropped."
        super().__init__("Ctrl-C", Text(body), yes="Quit", no="Stay")
        self.paused = paused
