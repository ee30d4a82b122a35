"""Help for the focused pane: its own `HELP`, then a table of the keys that work there and the
app's own."""

from __future__ import annotations

from typing import Any, ClassVar, NamedTuple

from rich.text import Text
from textual.app import App, ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.widgets import DataTable, Static

from modscope.tui.modal import CentredModal


class KeyHelp(NamedTuple):
    """One row of the help table."""

    key: str
    description: str
    enabled: bool
    where: str


class HelpScreen(CentredModal[None]):
    """The keys of the pane that had focus; `q` or `escape` closes.

    `pane` names the pane (the `where` of its keys) and `intro` starts the help: a pane's or a
    view's `HELP`, which Textual's help panel renders as markdown. Each `HELP` is plain
    sentences, so that both show it as written.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close", "Close", id="close_help"),
        Binding("question_mark", "close", "Close", show=False),
    ]

    DEFAULT_CSS = """
    HelpScreen > Vertical {
        width: 80;
        max-width: 96%;
        max-height: 90%;
    }
    HelpScreen #help-intro {
        height: auto;
        margin-bottom: 1;
    }
    HelpScreen DataTable {
        height: auto;
        max-height: 30;
    }
    """

    def __init__(self, pane: str, intro: str, keys: list[KeyHelp]) -> None:
        super().__init__()
        self.pane = pane
        self.intro = intro
        self.keys = keys

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            box.border_title = Text(f"Help: {self.pane}")
            box.border_subtitle = Text("q / escape closes")
            yield Static(Text(self.intro), id="help-intro")
            yield DataTable(id="help-table", cursor_type="row", show_cursor=False)

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        table.add_columns("key", "does", "where")
        for k in self.keys:
            style = "" if k.enabled else "dim"
            does = k.description + ("" if k.enabled else " (not now)")
            table.add_row(
                Text(k.key, style="bold " + style),
                Text(does, style=style),
                Text(k.where, style="dim"),
            )


def keys_for(app: App[Any], pane: str, *, screen_is_pane: bool = False) -> list[KeyHelp]:
    """The keys active on the current screen, in the order a person looks for them: the focused
    pane's own, then modscope's (they work everywhere), then those Textual adds.
    `screen_is_pane`: the screen itself is the pane (a view over the app, such as the diff
    view), so its bindings are the pane's."""
    groups: tuple[list[KeyHelp], list[KeyHelp], list[KeyHelp]] = ([], [], [])
    for active in app.screen.active_bindings.values():
        binding = active.binding
        if binding.system:
            continue
        everywhere = active.node is app or (active.node is app.screen and not screen_is_pane)
        row = KeyHelp(
            app.get_key_display(binding),
            binding.description or binding.action,
            active.enabled,
            "everywhere" if everywhere else pane,
        )
        ours = (binding.key, binding.action) in _modscope_bindings(type(active.node))
        groups[0 if ours and not everywhere else 1 if ours else 2].append(row)
    return [*groups[0], *groups[1], *groups[2]]


def _modscope_bindings(cls: type) -> set[tuple[str, str]]:
    """(key, action) of the bindings modscope's own classes declare (not Textual's)."""
    found: set[tuple[str, str]] = set()
    for klass in cls.__mro__:
        if not klass.__module__.startswith("modscope"):
            continue
        for b in klass.__dict__.get("BINDINGS", ()):
            if isinstance(b, Binding):
                found.update((key.strip(), b.action) for key in b.key.split(","))
    return found
