"""A small plot of the loss over the recorded steps, drawn with block characters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from textual.content import Content
from textual.reactive import reactive
from textual.widget import Widget

from modscope.core.fmt import format_number

BLOCKS = " ▁▂▃▄▅▆▇█"
LOG_SCALE_RATIO = 1000.0
"""A log scale is used when the largest positive loss is this many times the smallest."""


def plot_rows(values: Sequence[float | None], width: int, height: int) -> tuple[list[str], bool]:
    """Columns of eighth-blocks, one per value (the last `width`), `height` rows, top first.

    Non-finite values draw `×` on the bottom row; equal values draw half-height bars; the scale
    is logarithmic when all values are positive and span more than `LOG_SCALE_RATIO`. Returns
    the rows and whether the log scale was used.
    """
    tail = list(values)[-width:] if width > 0 else []
    finite = [v for v in tail if v is not None and math.isfinite(v)]
    log = bool(finite) and min(finite) > 0 and max(finite) / min(finite) > LOG_SCALE_RATIO
    scaled = [
        (math.log10(v) if log else v) if v is not None and math.isfinite(v) else None for v in tail
    ]
    ok = [v for v in scaled if v is not None]
    lo, hi = (min(ok), max(ok)) if ok else (0.0, 0.0)
    levels = height * 8
    columns: list[str] = []
    for v in scaled:
        if v is None:
            columns.append("×" + " " * (height - 1))
            continue
        eighths = levels // 2 if hi == lo else max(1, round((v - lo) / (hi - lo) * levels))
        full, part = divmod(eighths, 8)
        column = "█" * full + (BLOCKS[part] if part else "")
        columns.append(column.ljust(height))
    rows = ["".join(c[row] for c in columns) for row in range(height - 1, -1, -1)]
    return rows, log


class LossPlot(Widget):
    """The loss of every recorded step (`losses`); the newest at the right."""

    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        width: 1fr;
        color: $accent;
    }
    """

    losses: reactive[tuple[float | None, ...]] = reactive(())
    """The loss after each recorded step (None where there was none); setting it redraws."""

    def show(self, losses: Sequence[float | None]) -> None:
        self.losses = tuple(losses)

    def render(self) -> Content:
        width, height = self.size.width, self.size.height
        if not self.losses:
            return Content.styled("no loss yet: s steps", "dim")
        if height < 2 or width < 8:
            return Content(f"loss {format_number(self.losses[-1])}")
        rows, log = plot_rows(self.losses, width, height - 1)
        finite = [v for v in self.losses[-width:] if v is not None and math.isfinite(v)]
        caption = Content.assemble(
            (format_number(self.losses[-1]), "bold"),
            (f" at step {len(self.losses)}", "dim"),
            (f", max {format_number(max(finite))}" if finite else "", "dim"),
            (", log scale" if log else "", "dim"),
        )
        # Every line is at most `width` cells (the caption cut, one column per value), so none
        # wraps; the placeholder above may.
        parts: list[Content | tuple[str, str]] = [caption.truncate(width, ellipsis=True)]
        for line in rows:
            parts.append(("\n", ""))
            parts += _runs(line)
        return Content.assemble(*parts)


def _runs(line: str) -> list[tuple[str, str]]:
    """The row cut where the `×` marks of non-finite losses start and stop (in the theme's error
    colour)."""
    out: list[tuple[str, str]] = []
    for ch in line:
        style = "bold $text-error" if ch == "×" else ""
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + ch, style)
        else:
            out.append((ch, style))
    return out
