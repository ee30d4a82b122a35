"""`b`: the break conditions armed, to add to and remove from (`--break` in the app)."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import Input, Static
from textual.widgets.option_list import Option

from modscope.core.contract.break_spec import CONDITIONS, BreakCondition, BreakSpecError
from modscope.core.contract.fmt import printable
from modscope.tui.bounded_input import TEXT_LENGTH, BoundedInput
from modscope.tui.modal import CentredModal
from modscope.tui.option_list import OptionList


class BreakDialog(CentredModal["tuple[str, ...] | None"]):
    """The armed conditions (`delete`/`x` removes the highlighted one) and a field to add one
    (`enter`). `escape` closes and arms what the list holds; nothing changed answers None."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("delete,x", "remove", "Remove", id="remove_break"),
    ]

    AUTO_FOCUS = "#condition"

    DEFAULT_CSS = """
    BreakDialog > Vertical {
        width: 84;
        max-width: 100%;
    }
    BreakDialog OptionList {
        height: auto;
        max-height: 10;
        margin-bottom: 1;
    }
    BreakDialog #break-error {
        color: $text-error;
        height: auto;
    }
    """

    def __init__(self, armed: tuple[str, ...]) -> None:
        super().__init__()
        self.before = tuple(armed)
        self.conditions = list(armed)

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text("Break conditions")
            box.border_subtitle = Text("enter adds · x removes · escape arms and closes")
            yield OptionList(id="armed")
            yield BoundedInput(
                placeholder="a condition, e.g. nan or loss>10",
                id="condition",
                max_length=TEXT_LENGTH,
            )
            yield Static(Text(" · ".join(CONDITIONS), style="dim"))
            yield Static(id="break-error")

    def on_mount(self) -> None:
        self._show()

    def _show(self) -> None:
        armed = self.query_one(OptionList)
        armed.clear_options()
        if not self.conditions:
            nothing = Text("none armed: nothing is watched", style="dim")
            armed.add_option(Option(nothing, disabled=True))
        else:
            armed.add_options(Option(Text(printable(c))) for c in self.conditions)
            armed.highlighted = 0

    @on(Input.Submitted)
    def _add(self, event: Input.Submitted) -> None:
        event.stop()
        text = event.value.strip()
        error = self.query_one("#break-error", Static)
        try:
            condition = str(BreakCondition.parse(text))
        except BreakSpecError as exc:
            error.update(Text(printable(str(exc))))
            return
        error.update("")
        if condition not in self.conditions:
            self.conditions.append(condition)
        event.input.value = ""
        self._show()

    def action_remove(self) -> None:
        armed = self.query_one(OptionList)
        if armed.has_focus and armed.highlighted is not None and self.conditions:
            del self.conditions[armed.highlighted]
            self._show()

    def action_close(self) -> None:
        now = tuple(self.conditions)
        self.dismiss(None if now == self.before else now)

    @property
    def text(self) -> str:
        """What the dialog shows (for tests)."""
        armed = self.query_one(OptionList)
        lines = [str(armed.get_option_at_index(i).prompt) for i in range(armed.option_count)]
        lines.append(str(self.query_one("#break-error", Static).render()))
        return "\n".join(lines)
