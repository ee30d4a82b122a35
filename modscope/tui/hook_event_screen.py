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
from textual.theme import Theme
from textual.widgets import Static

from modscope.core.contract.fmt import printable
from modscope.core.contract.hook_notes import legacy_lesson, module_inputs
from modscope.core.contract.hook_spec import HookKind
from modscope.core.contract.steps import HookEvent
from modscope.report.labels import shown_path
from modscope.tui.hook_sections import Palette, field_sections
from modscope.tui.modal import CentredModal
from modscope.tui.model_view import ModelView


class HookEventScreen(CentredModal[None]):
    """A modal over one event (the last firing, for a coalesced one); `q` or `escape` closes.

    `view` (the app's model view, when given) names the module's class and its inputs in the legacy
    hook's lesson.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,enter", "close", "Close", id="close_event"),
    ]

    DEFAULT_CSS = """
    HookEventScreen > Vertical {
        width: 96%;
        max-height: 90%;
    }
    HookEventScreen VerticalScroll {
        height: auto;
        max-height: 100%;
    }
    """

    def __init__(self, event: HookEvent, name: str = "", *, view: ModelView | None = None) -> None:
        super().__init__()
        self.event = event
        self.module_name = name or event.module or "(root)"
        self.model_view = view

    def compose(self) -> ComposeResult:
        with Vertical() as box:
            title = Text("Hook event: ")
            title.append(shown_path(self.module_name), style="bold")
            title.append(f" {self.event.kind.value}")
            box.border_title = title
            box.border_subtitle = Text("q / escape closes")
            with VerticalScroll():
                yield Static(self.body(), id="event-body")

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, _: Theme) -> None:
        self.query_one("#event-body", Static).update(self.body())

    def body(self) -> RenderableType:
        e = self.event
        head = Table.grid(padding=(0, 1))
        head.add_column(style="dim", no_wrap=True)
        head.add_column()
        head.add_row("module", Text(printable(self.module_name), style="bold"))
        head.add_row("hook", Text(f"{e.kind.value}, {e.action.value}"))
        head.add_row("when", Text(f"step {e.step}, {e.phase.value} phase"))
        if e.count > 1:
            head.add_row("fired", Text(f"{e.count:,} times in this phase; this is the last"))
        parts: list[RenderableType] = [head, *field_sections(e, counted=True, autograd=True)]
        if e.note:
            parts.append(Text("\nnote", style="bold"))
            parts.append(Text(printable(e.note), style="italic"))
        if e.kind is HookKind.LEGACY_BACKWARD:
            warning = Palette.of(self.app.theme_variables).warning
            parts.append(Text(printable(self.lesson()), style=warning))
        return Group(*parts)

    def lesson(self) -> str:
        """The legacy hook's lesson, about this module and what its forward took."""
        e = self.event
        view = self.model_view
        seen = view.seen.get(e.module, {}) if view is not None else {}
        module = view.module(e.module) if view is not None else None
        return legacy_lesson(
            e.module,
            module.type_name if module is not None else "",
            e.args or module_inputs(seen),
            compared=HookKind.BACKWARD in seen,
        )

    @property
    def text(self) -> str:
        out = StringIO()
        Console(width=160, file=out, color_system=None).print(self.body())
        return out.getvalue()
