"""A small plot of the loss over the recorded steps, drawn with block characters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from modscope.core.contract.fmt import format_number

BLOCKS = " ▁▂▃▄▅▆▇█"
LOG_SCALE_RATIO = 1000.0
"""A log scale is used when the largest positive loss is this many times the smallest."""


def plot_rows(
    values: Sequence[float | None],
    width: int,
    height: int,
    other: Sequence[float | None] = (),
) -> tuple[list[str], bool, list[int | None]]:
    """Columns of eighth-blocks, one per step (the last `width`), `height` rows, top first.

    Non-finite values draw `×` on the bottom row; equal values draw half-height bars; the scale
    is logarithmic when all values are positive and span more than `LOG_SCALE_RATIO`. `other`
    is a second series over the same steps (the original timeline), on the same scale: the row
    of its value in each column (from the top; None where it has none or equals the first
    series). Returns the rows, whether the log scale was used, and those marker rows.
    """
    steps = max(len(values), len(other))
    start = max(0, steps - width) if width > 0 else steps
    tail = list(values)[start:] + [None] * max(0, steps - max(start, len(values)))
    other_tail = list(other)[start:] + [None] * max(0, steps - max(start, len(other)))
    both = [v for v in (*tail, *other_tail) if v is not None and math.isfinite(v)]
    log = bool(both) and min(both) > 0 and max(both) / min(both) > LOG_SCALE_RATIO

    def scaled(v: float | None) -> float | None:
        if v is None or not math.isfinite(v):
            return None
        return math.log10(v) if log else v

    ok = [x for x in map(scaled, both) if x is not None]
    lo, hi = (min(ok), max(ok)) if ok else (0.0, 0.0)
    levels = height * 8

    def eighths(x: float) -> int:
        return levels // 2 if hi == lo else max(1, round((x - lo) / (hi - lo) * levels))

    columns: list[str] = []
    markers: list[int | None] = []
    for i, v in enumerate(tail):
        x = scaled(v)
        if x is None:
            columns.append(("×" if i < len(values) - start else " ") + " " * (height - 1))
        else:
            full, part = divmod(eighths(x), 8)
            column = "█" * full + (BLOCKS[part] if part else "")
            columns.append(column.ljust(height))
        theirs = other_tail[i] if i < len(other_tail) else None
        y = scaled(theirs)
        if y is None or theirs == v:
            markers.append(None)
        else:
            markers.append(height - 1 - min(height - 1, (eighths(y) - 1) // 8))
    rows = ["".join(c[row] for c in columns) for row in range(height - 1, -1, -1)]
    return rows, log, markers


class LossPlot(Widget):
    """The loss of every recorded step (`losses`); the newest at the right. After a rewind,
    the original timeline's losses (`other`) are drawn over it as `─` marks where they differ."""

    BORDER_TITLE = "Loss"

    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        width: 1fr;
        color: $accent;
    }
    """

    losses: reactive[tuple[float | None, ...]] = reactive(())
    """The loss after each recorded step (None where there was none); setting it redraws."""
    other: reactive[tuple[float | None, ...]] = reactive(())
    """The original timeline's loss after each of its steps (empty before a rewind)."""

    def show(self, losses: Sequence[float | None], other: Sequence[float | None] = ()) -> None:
        self.losses = tuple(losses)
        self.other = tuple(other)

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        if not self.losses and not self.other:
            return Content.styled("no loss yet: s steps", "dim")
        last = self.losses[-1] if self.losses else None
        if height < 2 or width < 8:
            return Content(f"loss {format_number(last)}")
        rows, log, markers = plot_rows(self.losses, width, height - 1, self.other)
        steps = max(len(self.losses), len(self.other))
        shown = [*self.losses[-width:], *self.other[max(0, steps - width) :]]
        finite = [v for v in shown if v is not None and math.isfinite(v)]
        parts: list[Content | tuple[str, str]] = [
            (format_number(last), "bold"),
            (f" at step {len(self.losses)}", "dim"),
        ]
        if self.other:
            original = f"─ original {format_number(self.other[-1])} at {len(self.other)}"
            parts += [("  ", ""), (original, ORIGINAL_STYLE)]
        parts += [
            (f", max {format_number(max(finite))}" if finite else "", "dim"),
            (", log scale" if log else "", "dim"),
        ]
        # Every line is at most `width` cells (the caption cut, one column per step), so none
        # wraps; the placeholder above may.
        out: list[Content | tuple[str, str]] = [
            Content.assemble(*parts).truncate(width, ellipsis=True)
        ]
        for row, line in enumerate(rows):
            out.append(("\n", ""))
            out += _runs(line, [m == row for m in markers])
        return Content.assemble(*out)


ORIGINAL_STYLE = "bold $text-warning"
"""The original timeline's marks and caption."""


def _runs(line: str, marked: Sequence[bool] = ()) -> list[tuple[str, str]]:
    """The row cut into runs of one style: the `×` marks of non-finite losses in the theme's
    error colour, the original timeline's marks (`marked` columns) in `ORIGINAL_STYLE`: `─`
    on empty cells, the bar's own block where the bar covers the mark."""
    out: list[tuple[str, str]] = []
    for i, ch in enumerate(line):
        if i < len(marked) and marked[i]:
            ch, style = ("─" if ch == " " else ch), ORIGINAL_STYLE
        else:
            style = "bold $text-error" if ch == "×" else ""
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + ch, style)
        else:
            out.append((ch, style))
    return out
