"""The base of modscope's dialogs and views over the app: one bordered box in its middle."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from textual.binding import Binding, BindingType
from textual.screen import ModalScreen
from textual.widgets import Input

T = TypeVar("T")


class CentredModal(ModalScreen[T]):
    """A modal screen whose box (its `Vertical`) sits in the middle of the app, dimmed below.

    `escape` runs `action_close`, which answers None; a dialog whose way out answers something
    else (a confirmation's no, the break dialog's conditions) overrides it. A subclass gives its
    box a width in its DEFAULT_CSS (and a height, border colour or padding where they differ)
    and names the widget that has the focus when it opens in `AUTO_FOCUS`.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape", "close", "Close", show=False, id="close_dialog"),
    ]

    DEFAULT_CSS = """
    CentredModal {
        align: center middle;
    }
    CentredModal > Vertical {
        height: auto;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    """

    def on_mount(self) -> None:
        # A blinking cursor would make a headless run's screenshots depend on timing.
        for field in self.query(Input):
            field.cursor_blink = not self.app.is_headless

    def action_close(self) -> None:
        self.dismiss(None)
