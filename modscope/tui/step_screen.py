"""Ask for a step number (`g`: go to a step of a replay)."""

from __future__ import annotations

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.containers import Vertical
from textual.widgets import Input, Static

from modscope.tui.bounded_input import NUMBER_LENGTH, BoundedInput
from modscope.tui.modal import CentredModal


class StepScreen(CentredModal["int | None"]):
    """A step number from 0 to `last`; `enter` goes there, `escape` cancels."""

    AUTO_FOCUS = "#step"

    DEFAULT_CSS = """
    StepScreen > Vertical {
        width: 48;
    }
    StepScreen #step-error {
        color: $text-error;
        height: auto;
    }
    """

    def __init__(self, current: int, last: int) -> None:
        super().__init__()
        self.current = current
        self.last = last

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text("Go to step")
            box.border_subtitle = Text("enter goes · escape cancels")
            yield Static(Text(f"a step from 0 to {self.last} (now {self.current})"))
            yield BoundedInput(
                str(self.current), type="integer", id="step", max_length=NUMBER_LENGTH
            )
            yield Static(id="step-error")

    def on_mount(self) -> None:
        self.query_one(Input).select_all()

    @on(Input.Submitted)
    def _submitted(self, event: Input.Submitted) -> None:
        event.stop()
        try:
            step = int(event.value)
        except ValueError:
            step = -1
        if not 0 <= step <= self.last:
            self.query_one("#step-error", Static).update(
                Text(
                    f"{event.value!r} is not a step from 0 to {self.last}"
                    if event.value.strip()
                    else f"type a step from 0 to {self.last}"
                )
            )
            return
        self.dismiss(step)
