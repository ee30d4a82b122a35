"""The log: what the script printed, hook events, messages and errors, newest last."""

from __future__ import annotations

from collections import deque

from rich.text import Text
from textual.events import Resize
from textual.widgets import RichLog

from modscope.core.contract.fmt import printable, printable_lines
from modscope.core.contract.steps import HookEvent
from modscope.tui import labels

LOG_LIMIT = 2000
"""Lines the log keeps; older ones drop off the top."""


class LogPane(RichLog):
    """A RichLog fed plain Texts only (user prints are never parsed as markup, and each
    printed line is shown escaped: a `\\x1b[2J` in a print shows, it does not clear the screen).

    The script's printed lines are written to the RichLog once per burst, and only the last
    `LOG_LIMIT` of them: a script that prints a million lines costs only the newest their
    wrapping, not all of them. modscope's own entries are written as they come.
    """

    BORDER_TITLE = "Log"
    HELP = "What the script printed, hook events, messages and errors."

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
        # A printed line is kept as its escaped str until it is written (most never are).
        self._entries: deque[Text | str] = deque(maxlen=LOG_LIMIT)
        self._unwritten = 0  # the newest entries not yet written to the RichLog
        self._width = 0

    def add(self, text: str | Text, style: str = "") -> None:
        """Append one entry; a str is shown as typed, its control characters escaped (a Text
        is shown as it is: the labels that build one escape what they take from the user)."""
        line = text if isinstance(text, Text) else Text(printable_lines(text), style=style)
        self._append(line, line.plain)
        # modscope's own entries come one at a time: written at once, in order after any
        # printed lines still waiting, so what the log shows never depends on timing.
        self._write_unwritten()

    def _append(self, entry: Text | str, plain: str) -> None:
        self.plain_lines.append(plain)
        self._entries.append(entry)
        self._unwritten += 1
        if self._unwritten == 1:
            self.call_later(self._write_unwritten)

    def _write_unwritten(self) -> None:
        count, self._unwritten = self._unwritten, 0
        if count == 0:
            return
        if count >= len(self._entries):
            # The burst pushed out every entry shown before it: the RichLog starts afresh.
            self.clear()
            count = len(self._entries)
        last = len(self._entries) - 1
        for index in range(last + 1 - count, last + 1):
            entry = self._entries[index]
            text = Text(entry) if isinstance(entry, str) else entry
            # Scrolled to the end once, after the last (as RichLog does after each).
            self.write(text, scroll_end=False if index < last else None)

    def on_resize(self, event: Resize) -> None:
        # RichLog wraps each entry once, at the width it had then: when the pane gets narrower
        # or wider (a resized terminal, the hook events pane appearing), wrap them again.
        width = event.size.width
        if self._width and width != self._width and self._entries:
            self.call_after_refresh(self._rewrap)
        self._width = width

    def _rewrap(self) -> None:
        self._unwritten = len(self._entries)
        self._write_unwritten()

    def forget(self) -> None:
        """Drop every entry (a replay repaints the session from its start)."""
        self.plain_lines.clear()
        self._entries.clear()
        self._unwritten = 0
        self.clear()

    def printed(self, line: str) -> None:
        """One line the script printed; tabs become spaces, other controls escapes."""
        shown = printable(line.expandtabs())
        self._append(shown, shown)

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
