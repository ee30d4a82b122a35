"""The log: what the script printed, hook events, messages and errors, newest last."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from modscope.core.fmt import printable, printable_lines
from modscope.core.types import HookEvent
from modscope.tui import labels

LOG_LIMIT = 2000


class LogPane(RichLog):
    """A RichLog fed plain Texts only (user prints are never parsed as markup, and each
    printed line is shown escaped: a `\\x1b[2J` in a print shows, it does not clear the screen)."""

    DEFAULT_CSS = """
    LogPane {
        scrollbar-size-vertical: 1;
        overflow-x: hidden;
        overflow-y: auto;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            id=id, max_lines=LOG_LIMIT, wrap=True, markup=False, highlight=False, min_width=20
        )
        self.plain_lines: deque[str] = deque(maxlen=LOG_LIMIT)
        self._texts: deque[Text] = deque(maxlen=LOG_LIMIT)
        self._width = 0

    def add(self, text: str | Text, style: str = "") -> None:
        """Append one entry; a str is shown as typed, its control characters escaped (a Text
        is shown as it is: the labels that build one escape what they take from the user)."""
        line = text if isinstance(text, Text) else Text(printable_lines(text), style=style)
        self.plain_lines.append(line.plain)
        self._texts.append(line)
        self.write(line)

    def on_resize(self, event: Resize) -> None:
        # RichLog wraps each entry once, at the width it had then: when the pane gets narrower
        # or wider (a resized terminal, the hook events pane appearing), wrap them again.
        width = event.size.width
        if self._width and width != self._width and self._texts:
            self.call_after_refresh(self._rewrap)
        self._width = width

    def _rewrap(self) -> None:
        self.clear()
        for text in self._texts:
            self.write(text)

    def forget(self) -> None:
        """Drop every entry (a replay repaints the session from its start)."""
        self.plain_lines.clear()
        self._texts.clear()
        self.clear()

    def printed(self, line: str) -> None:
        """One line the script printed; tabs become spaces, other controls escapes."""
        self.add(Text(printable(line.expandtabs())))

    def message(self, line: str) -> None:
        self.add(Text(printable_lines(line), style="dim italic"))

    def error(self, text: Text) -> None:
        self.add(text)

    def hook_events(self, events: list[HookEvent], limit: int) -> None:
        """Log a burst of hook events: the newest `limit` of them, the rest as a count."""
        if len(events) > limit:
            self.message(f"… {len(events) - limit:,} earlier hook events not shown")
        for event in events[-limit:]:
            self.add(labels.hook_event_text(event))

    @property
    def text(self) -> str:
        return "\n".join(self.plain_lines)
