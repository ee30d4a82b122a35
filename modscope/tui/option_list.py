"""Textual's `OptionList`, laid out at any width: a pane squeezed to nothing wraps its options
at one cell instead of crashing the app."""

from __future__ import annotations

from textual.geometry import Size
from textual.widgets import OptionList as TextualOptionList


class OptionList(TextualOptionList):
    """An `OptionList` whose height can be asked at any width, down to none at all."""

    def get_content_height(self, container: Size, viewport: Size, width: int) -> int:
        # Textual wraps each option at `width` less the option's padding; at zero or less
        # rich's `chop_cells` raises ValueError (a terminal of 20x8 gets there).
        padding = self.get_component_styles("option-list--option").padding.width
        return super().get_content_height(container, viewport, max(width, padding + 1))
