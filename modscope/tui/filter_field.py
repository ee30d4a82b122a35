"""The tree's name filter (`/`): a bounded field above the tree, shown while it filters."""

from __future__ import annotations

from textual.reactive import var

from modscope.tui.bounded_input import TEXT_LENGTH, BoundedInput


class FilterField(BoundedInput):
    """Part of a name: the tree keeps the nodes that match and their ancestors."""

    BORDER_TITLE = "Filter"
    HELP = "Type part of a name: the tree keeps matches and their ancestors."

    shown = var(False, bindings=True, toggle_class="-shown")
    """Whether the field is shown (`/`; `escape` hides it, and is a key only while it shows)."""

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            placeholder="filter by name (escape clears)", id=id, max_length=TEXT_LENGTH
        )
