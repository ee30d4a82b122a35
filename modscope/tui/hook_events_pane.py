"""The hook events pane: what modscope's hooks saw, newest last; `enter` opens one in full."""

from __future__ import annotations

from collections import deque
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets.option_list import Option

from modscope.core.contract.steps import HookEvent
from modscope.tui import labels
from modscope.tui.hook_event_groups import burst
from modscope.tui.option_list import OptionList

ENTRIES_LIMIT = 500
"""Entries kept in the pane; older ones drop off the top."""


class HookEventsPane(OptionList):
    """Coalesced hook events (one line per module and kind per phase, with a count)."""

    BORDER_TITLE = "Hook events"
    HELP = (
        "What modscope's hooks saw, one line per module and hook kind per phase (×N when it "
        "fired N times); enter opens one in full."
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("enter", "select", "Open event", id="open_event"),
    ]

    class Opened(Message):
        """`enter` on an event: show it in full."""

        def __init__(self, event: HookEvent) -> None:
            super().__init__()
            self.event = event

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.entries: deque[HookEvent | str] = deque(maxlen=ENTRIES_LIMIT)
        self.seen = 0

    def on_mount(self) -> None:
        self._title()

    def add_events(self, groups: Sequence[HookEvent]) -> None:
        """Add a burst of events, coalesced by `coalesce`; the cursor follows the newest when it
        was there."""
        if not groups:
            return
        self.seen += sum(e.count for e in groups)
        shown = burst(groups)
        new: list[HookEvent | str] = [shown.more_text] if shown.more_text else []
        new += shown.shown
        follow = self.highlighted is None or self.highlighted >= self.option_count - 1
        overflow = len(self.entries) + len(new) > ENTRIES_LIMIT
        self.entries.extend(new)
        if overflow:
            self.set_options(_option(e) for e in self.entries)
        else:
            self.add_options(_option(e) for e in new)
        if follow:
            self.highlighted = _last_enabled(self.entries)
        self._title()

    def clear_events(self) -> None:
        self.entries.clear()
        self.seen = 0
        self.clear_options()
        self._title()

    @property
    def selected(self) -> HookEvent | None:
        i = self.highlighted
        if i is None or not 0 <= i < len(self.entries):
            return None
        entry = self.entries[i]
        return entry if isinstance(entry, HookEvent) else None

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        chosen = self.selected
        if chosen is not None:
            self.post_message(self.Opened(chosen))

    def _title(self) -> None:
        title = Text("Hook events")
        if self.seen:
            title.append(f" ({self.seen:,} seen)")
        self.border_title = title


def _option(entry: HookEvent | str) -> Option:
    if isinstance(entry, HookEvent):
        return Option(labels.hook_event_text(entry))
    return Option(Text(entry, style="dim italic"), disabled=True)


def _last_enabled(entries: deque[HookEvent | str]) -> int | None:
    for i in range(len(entries) - 1, -1, -1):
        if isinstance(entries[i], HookEvent):
            return i
    return None
