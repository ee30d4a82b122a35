"""The layers view (`l`): each module's output statistics and learning signs after the last
step, sortable by any column, filtered like the tree, with a sparkline over the steps."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.content import Content
from textual.widgets import DataTable, Static

from modscope.core.contract.fmt import format_count, printable, sparkline
from modscope.core.contract.layer_columns import (
    LAYER_COLUMNS,
    TREND_COLUMN,
    LayerColumn,
    by_path,
    column,
)
from modscope.core.contract.layer_types import LayerStats
from modscope.tui.hook_sections import Palette
from modscope.tui.model_view import ModelView
from modscope.tui.table_screen import TableScreen, cell, tail_cell

NUMBER_CELLS = 10
"""The widest number a column shows (`-3.203e-04`)."""

ROW_LIMIT = 2000
"""At most this many modules are listed ("showing N of M" in the caption)."""

TREND_WIDTH = 12
"""Steps the sparkline shows, the latest last."""

SORT_KEYS: tuple[str, ...] = ("module", "type", *(c.key for c in LAYER_COLUMNS))
"""What `o` cycles through: the model's order (by path), the class name, each numeric column."""


class LayersScreen(TableScreen[str | None]):
    """The modules as a table; `enter` closes it and selects the module in the tree (the screen
    is dismissed with its path)."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close", "Close", id="close_layers"),
        Binding("l", "close", "Close", show=False),
        Binding("o", "next_sort", "Sort by next column", id="layers_sort"),
        Binding("O", "reverse_sort", "Reverse order", id="layers_reverse"),
    ]

    NAME = "layers"
    BORDER_TITLE = "Layers"
    HELP_TITLE = "Layers"
    HELP = (
        "Every module after the last step: its output's mean, std and absmax; dead, the share "
        "of its output that is exactly zero (any module: a dropout's zeros count too; red for "
        "an activation whose whole output is zero); saturated, the share at the rails of a "
        "sigmoid or tanh; its gradient norm and the update ratio |Δw|/|w| of its largest "
        "parameter. The sparkline follows the sort column; the tree's / filter applies; enter "
        "selects the module in the tree."
    )

    DEFAULT_CSS = """
    LayersScreen > Vertical {
        width: 98%;
    }
    """

    def __init__(self, view: ModelView, filter_text: str = "") -> None:
        super().__init__()
        self.view = view
        self.filter_text = filter_text
        self.sort_key = "module"
        self.descending = False

    # -- keys ----------------------------------------------------------------------------------

    def action_next_sort(self) -> None:
        i = SORT_KEYS.index(self.sort_key)
        self.sort_key = SORT_KEYS[(i + 1) % len(SORT_KEYS)]
        # Numbers read largest first (the layer that explodes, the one most dead); names A-Z.
        self.descending = self.sort_key not in ("module", "type")
        self._fill()

    def action_reverse_sort(self) -> None:
        self.descending = not self.descending
        self._fill()

    def on_data_table_row_selected(self, event: DataTable.RowSelected) -> None:
        self.dismiss(event.row_key.value)

    def on_data_table_header_selected(self, event: DataTable.HeaderSelected) -> None:
        key = str(event.column_key.value)
        if key in SORT_KEYS:
            same = key == self.sort_key
            self.sort_key = key
            self.descending = not self.descending if same else key not in ("module", "type")
            self._fill()

    def refresh_rows(self) -> None:
        """New statistics arrived (a step while the view is open)."""
        self._fill()

    # -- what it shows -------------------------------------------------------------------------

    def rows(self) -> list[LayerStats]:
        """The modules listed, in order: those the tree's filter keeps, sorted."""
        if not self.view.layers:
            return []
        modules = list(self.view.layers[-1].modules)
        if self.filter_text:
            keep = self.view.with_owners(self.view.matching(self.filter_text))
            modules = [m for m in modules if m.path in keep]
        return sort_layers(modules, self.sort_key, descending=self.descending)

    def _caption(self, shown: int, total: int) -> Content:
        step = self.view.layers[-1].step
        arrow = "↓" if self.descending else "↑"
        sort = "model order" if self.sort_key == "module" else self._title(self.sort_key)
        parts: list[tuple[str, str] | str] = [
            (f"after step {step}", "bold"),
            f"  sorted by {sort} {arrow}",
            ("  (o: next column, O: reverse, enter: show in the tree)", "dim"),
        ]
        if self.filter_text:
            parts.append(("  filter: ", "dim"))
            parts.append(printable(self.filter_text))
        if shown < total:
            parts.append((f"  showing {format_count(shown)} of {format_count(total)}", "dim"))
        return Content.assemble(*parts)

    def _title(self, key: str) -> str:
        return column(key).title if key not in ("module", "type") else key

    def _trend(self) -> LayerColumn:
        """The column whose history the sparkline shows: the sort column when it is numeric."""
        return column(self.sort_key if self.sort_key not in ("module", "type") else TREND_COLUMN)

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        caption = self.query_one("#layers-caption", Static)
        if not self.view.layers:
            caption.update(
                Content.styled(
                    "No statistics yet: they are collected from the first step after this view "
                    "was opened. Press escape, then s to run one iteration.",
                    "dim",
                )
            )
            return
        trend = self._trend()
        # The numbers come right after the module, so that at 120 columns all of them are on
        # screen; the type and the sparkline follow (the table scrolls sideways to them).
        table.add_column("module" + self._mark("module"), key="module")
        for c in LAYER_COLUMNS:
            table.add_column(Text(c.title + self._mark(c.key), justify="right"), key=c.key)
        table.add_column("type" + self._mark("type"), key="type")
        table.add_column(f"{trend.title} (steps)", key="trend")
        rows = self.rows()
        caption.update(self._caption(min(len(rows), ROW_LIMIT), len(self.view.layers[-1].modules)))
        palette = Palette.of(self.app.theme_variables)
        history = [by_path(s) for s in list(self.view.layers)[-TREND_WIDTH:]]
        longest = max((cell_len(printable(m.path)) for m in rows), default=6)
        width = max(16, min(40, longest, self._module_room()))
        for stats in rows[:ROW_LIMIT]:
            table.add_row(*self._cells(stats, trend, history, width, palette), key=stats.path)

    def _module_room(self) -> int:
        """The cells left for the module column once the number columns are on screen: the
        view's box takes 98% of the screen, less its border; every column has a cell of
        padding on either side, and a number column is as wide as its title (with the sort
        mark) or a 10-cell number."""
        numbers = sum(max(cell_len(c.title) + 2, NUMBER_CELLS) + 2 for c in LAYER_COLUMNS)
        return int(self.app.size.width * 0.98) - 2 - numbers - 2

    def _mark(self, key: str) -> str:
        if key != self.sort_key:
            return ""
        return " ↓" if self.descending else " ↑"

    def _cells(
        self,
        stats: LayerStats,
        trend: LayerColumn,
        history: Sequence[dict[str, LayerStats]],
        width: int,
        palette: Palette,
    ) -> list[Text]:
        # DataTable cells are Rich renderables: they take the theme's colours, not `$variables`.
        alarm = {
            "dead": stats.activation is not None and stats.dead == 1.0,
            "saturated": (stats.saturated or 0.0) > 0.5,
        }
        out = [tail_cell(printable(stats.path) or "(root)", width, "bold")]
        for c in LAYER_COLUMNS:
            style = f"bold {palette.error}" if alarm.get(c.key) else ""
            out.append(Text(c.cell(stats), style=style, justify="right"))
        out.append(cell(printable(stats.type_name), 16, "dim"))
        out.append(Text(sparkline(trend.history(history, stats.path), TREND_WIDTH)))
        return out


def sort_layers(
    modules: Sequence[LayerStats], key: str, *, descending: bool = False
) -> list[LayerStats]:
    """`modules` sorted by `key` (`module`: the model's order, as given); a module without a
    value for the column (never called, no parameters) comes last either way."""
    if key == "module":
        return list(reversed(modules)) if descending else list(modules)
    if key == "type":
        return sorted(modules, key=lambda m: m.type_name.lower(), reverse=descending)
    read = column(key).value
    known = [(v, m) for m in modules if (v := read(m)) is not None and not math.isnan(v)]
    missing = [m for m in modules if (v := read(m)) is None or math.isnan(v)]
    known.sort(key=lambda vm: vm[0], reverse=descending)
    return [m for _, m in known] + missing
