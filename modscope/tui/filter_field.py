"""The tree's name filter (`/`): a bounded field above the tree, shown while it filters."""

from __future__ import annotations

from modscope.tui.bounded_input import TEXT_LENGTH, BoundedInput


class FilterField(BoundedInput):
    """Part of a name: the tree keeps the nodes that match and their ancestors."""

    BORDER_TITLE = "Filter"
    HELP = "Type part of a name: the tree keeps matches and their ancestors."

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(
            placeholder="filter by name (escape clears)", id=id, max_length=TEXT_LENGTH
        )
