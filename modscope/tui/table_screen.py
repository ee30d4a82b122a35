"""A modal view of one table under a caption, over the app: the diff view and the layers view."""

from __future__ import annotations

from typing import ClassVar, TypeVar

from rich.cells import cell_len, set_cell_size
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.theme import Theme
from textual.widgets import DataTable, Footer, Static

from modscope.tui.help_screen import HelpScreen, keys_for
from modscope.tui.modal import CentredModal

T = TypeVar("T")


class TableScreen(CentredModal[T]):
    """A caption (`#NAME-caption`) over a table (`#NAME-table`) in a bordered box; `j`/`k` move.

    A subclass fills both in `_fill`, which runs on mount and again when the theme changes
    (DataTable cells are Rich renderables: they take the theme's colours only when drawn anew).
    """

    NAME: ClassVar[str] = "table"
    """The prefix of the caption's and the table's ids."""
    BORDER_TITLE: ClassVar[str] = ""
    HELP_TITLE: ClassVar[str] = ""
    """What `?`'s help calls this view (its `HELP` starts the help)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("question_mark,f1", "help", "Help", show=False),
    ]

    AUTO_FOCUS = "DataTable"

    DEFAULT_CSS = """
    TableScreen > Vertical {
        width: 96%;
        height: 92%;
        padding: 0;
    }
    TableScreen .table-caption {
        height: auto;
        padding: 0 1;
    }
    TableScreen DataTable {
        height: 1fr;
    }
    """

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id=f"{self.NAME}-caption", classes="table-caption")
            yield DataTable(id=f"{self.NAME}-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        if self.BORDER_TITLE:
            self.query_one(Vertical).border_title = Text(self.BORDER_TITLE)
        self._fill()
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, _: Theme) -> None:
        self._fill()

    def _fill(self) -> None:
        raise NotImplementedError

    def action_help(self) -> None:
        keys = keys_for(self.app, self.HELP_TITLE, screen_is_pane=True)
        self.app.push_screen(HelpScreen(self.HELP_TITLE, self.HELP or "", keys))

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()


def cell(text: str, width: int, style: str) -> Text:
    """A one-line cell of at most `width` cells, cut with an ellipsis: a long summary must not
    widen its column and push the others off screen."""
    out = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    out.truncate(width, overflow="ellipsis")
    return out


def tail_cell(text: str, width: int, style: str) -> Text:
    """A one-line cell of at most `width` cells that keeps the end of `text`: a module path
    cut from the left (`…0.self_attn.out_proj`) still says which module it is."""
    if cell_len(text) > width:
        # The last `width - 1` cells: `set_cell_size` keeps the start of what it is given (a
        # wide character cut in half becomes a space), so it is given `text` reversed.
        text = "…" + set_cell_size(text[::-1], max(0, width - 1))[::-1]
    return Text(text, style=style, no_wrap=True)
