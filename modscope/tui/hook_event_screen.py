"""One hook event in full: every tensor summary of what the hook saw, and its note."""

from __future__ import annotations

from io import StringIO
from typing import ClassVar

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical, VerticalScroll
from textual.screen import ModalScreen
from textual.widgets import Static

from modscope.core.hook_notes import LEGACY_LESSON
from modscope.core.types import HookEvent, HookKind
from modscope.tui.hook_sections import FIELDS, summaries_table


class HookEventScreen(ModalScreen[None]):
    """A modal over one event (the last firing, for a coalesced one); `escape` closes."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("escape,enter", "dismiss", "Close", id="close_event"),
    ]

    DEFAULT_CSS = """
    HookEventScreen {
        align: center middle;
    }
    HookEventScreen > Vertical {
        width: 96%;
        height: auto;
        max-height: 90%;
        border: round $accent;
        background: $surface;
        padding: 0 1;
    }
    HookEventScreen VerticalScroll {
        height: auto;
        max-height: 100%;
    }
    """

    def __init__(self, event: HookEvent, name: str = "") -> None:
        super().__init__()
        self.event = event
        self.module_name = name or event.module or "(root)"

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            title = Text("Hook event: ")
            title.append(self.module_name, style="bold")
            title.append(f" {self.event.kind.value}")
            box.border_title = title
            box.border_subtitle = Text("escape closes")
            with VerticalScroll():
                yield Static(self.body(), id="event-body")

    def body(self) -> RenderableType:
        e = self.event
        head = Table.grid(padding=(0, 1))
        head.add_column(style="dim", no_wrap=True)
        head.add_column()
        head.add_row("module", Text(self.module_name, style="bold"))
        head.add_row("hook", Text(f"{e.kind.value}, {e.action.value}"))
        head.add_row("when", Text(f"step {e.step}, {e.phase.value} phase"))
        if e.count > 1:
            head.add_row("fired", Text(f"{e.count:,} times in this phase; this is the last"))
        parts: list[RenderableType] = [head]
        for name in FIELDS:
            values = getattr(e, name)
            if values is None:
                continue
            parts.append(Text(f"\n{name} ({len(values)})", style="bold"))
            parts.append(summaries_table(values, autograd=True))
        if e.note:
            parts.append(Text("\nnote", style="bold"))
            parts.append(Text(e.note, style="italic"))
        if e.kind is HookKind.LEGACY_BACKWARD:
            parts.append(Text(LEGACY_LESSON, style="yellow"))
        return Group(*parts)

    @property
    def text(self) -> str:
        out = StringIO()
        Console(width=160, file=out, color_system=None).print(self.body())
        return out.getvalue()
