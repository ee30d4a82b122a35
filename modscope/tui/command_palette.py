"""Textual's command palette (`ctrl+p`), its search field bounded as modscope's own fields are."""

from __future__ import annotations

from textual.command import CommandInput
from textual.command import CommandPalette as TextualCommandPalette

from modscope.tui.bounded_input import TEXT_LENGTH


class CommandPalette(TextualCommandPalette):
    """The command palette; a paste longer than its field is refused whole, so ten thousand
    module paths are never matched against a 100 kB query."""

    def on_mount(self) -> None:
        self.query_one(CommandInput).max_length = TEXT_LENGTH
