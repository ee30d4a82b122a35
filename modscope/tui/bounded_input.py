"""An `Input` that holds a bounded amount of text whatever is pasted into it, shown as typed."""

from __future__ import annotations

import re

from textual import events
from textual.widgets import Input

from modscope.core.contract.fmt import printable

TEXT_LENGTH = 200
"""Characters a name filter or a break condition holds (longer than any module path)."""

NUMBER_LENGTH = 24
"""Characters a number field (a factor, a step) holds."""

FIRST_LINE = re.compile(r"[^\r\n]*")
"""What a one-line field keeps of a paste: up to its first line break."""


class BoundedInput(Input):
    """An `Input` of at most `max_length` characters. A paste keeps its first line, with every
    control character shown as the escape Python writes for it (`\\x1b`), cut to the room left;
    a cut paste is said in a notification."""

    def __init__(self, value: str | None = None, *, max_length: int, **kwargs: object) -> None:
        super().__init__(value, max_length=max_length, **kwargs)  # type: ignore[arg-type]

    def _on_paste(self, event: events.Paste) -> None:
        # Replaces Input's paste, which splits all of a paste into lines and inserts a first
        # line of any length, that every later key then measures and redraws.
        event.prevent_default()
        event.stop()
        start, end = sorted(self.selection)
        assert self.max_length is not None  # `__init__` requires one
        room = max(self.max_length - (len(self.value) - (end - start)), 0)
        line = FIRST_LINE.match(event.text, 0, room + 1)
        kept: list[str] = []
        used = taken = 0
        for ch in line.group() if line else "":
            piece = printable(ch)
            if used + len(piece) > room:
                break
            kept.append(piece)
            used += len(piece)
            taken += 1
        if kept:
            self.replace("".join(kept), start, end)
        whole = FIRST_LINE.match(event.text)
        if whole is not None and taken < whole.end():
            self.notify(
                f"the paste was cut to {used} characters: this field holds {self.max_length}",
                severity="warning",
            )
