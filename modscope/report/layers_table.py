"""`run --layers` without `--json`: the layers after the last step as one rich table, with the
update ratio's history over the steps as a sparkline."""

from __future__ import annotations

from collections.abc import Sequence

from rich import box
from rich.console import Console
from rich.measure import Measurement
from rich.table import Table
from rich.text import Text

from modscope.core.contract.fmt import plural, printable, sparkline
from modscope.core.contract.layer_columns import LAYER_COLUMNS, TREND_COLUMN, by_path, column
from modscope.core.contract.layer_types import LayerStep

ROWS_SHOWN = 50
"""At most this many modules in the readable table (`--json` has them all)."""

TREND_WIDTH = 16
"""Steps the sparkline shows, the latest last."""


def layers_table(steps: Sequence[LayerStep]) -> Table:
    """The modules of the last of `steps`, in the model's order, one row each; a module never
    called shows `-` for its output columns."""
    last = steps[-1]
    trend = column(TREND_COLUMN)
    indexed = [by_path(s) for s in steps[-TREND_WIDTH:]]
    table = Table(
        title=f"Layers after step {last.step} (trend: {trend.title} over the last "
        f"{plural(len(indexed), 'step')})",
        title_justify="left",
        box=box.SIMPLE_HEAD,
        pad_edge=False,
    )
    table.add_column("module", overflow="fold")
    for c in LAYER_COLUMNS:
        table.add_column(c.title, justify="right", no_wrap=True)
    table.add_column("trend", no_wrap=True)
    for stats in last.modules[:ROWS_SHOWN]:
        dead = stats.dead == 1.0
        name = Text(printable(stats.path) or "(root)")
        name.append(f" {printable(stats.type_name)}", style="dim")
        table.add_row(
            name,
            *(
                Text(c.cell(stats), style="bold red" if dead and c.key == "dead" else "")
                for c in LAYER_COLUMNS
            ),
            sparkline(trend.history(indexed, stats.path), TREND_WIDTH),
        )
    if len(last.modules) > ROWS_SHOWN:
        table.caption = f"showing {ROWS_SHOWN} of {len(last.modules)} modules (--json has them all)"
    return table


def print_layers(console: Console, steps: Sequence[LayerStep]) -> None:
    """`layers_table` at its natural width, even past the terminal's: ten narrow numeric columns
    squeezed into 80 cells would cut every number."""
    table = layers_table(steps)
    wide = console.options.update_width(1000)
    width = Measurement.get(console, wide, table).maximum
    if width <= console.width:
        console.print(table)
        return
    # Console.print caps any width at the console's own: a wider console on the same file.
    wider = Console(
        file=console.file,
        width=width,
        highlight=False,
        color_system=console.color_system,  # type: ignore[arg-type]
        force_terminal=console.is_terminal,
    )
    wider.print(table)
