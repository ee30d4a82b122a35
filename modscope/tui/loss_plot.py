"""A small plot of the loss over the recorded steps, drawn with block characters."""

from __future__ import annotations

import math
from collections.abc import Sequence

from rich.text import Text
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
    """The loss of every recorded step; the newest at the right."""

    DEFAULT_CSS = """
    LossPlot {
        height: 1fr;
        width: 1fr;
        color: $accent;
    }
    """

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.losses: tuple[float | None, ...] = ()

    def show(self, losses: Sequence[float | None]) -> None:
        losses = tuple(losses)
        if losses != self.losses:
            self.losses = losses
            self.refresh()

    def render(self) -> Text:
        width, height = self.size.width, self.size.height
        if not self.losses:
            return Text("no loss yet: s steps", style="dim")
        if height < 2 or width < 8:
            return Text(f"loss {format_number(self.losses[-1])}")
        rows, log = plot_rows(self.losses, width, height - 1)
        finite = [v for v in self.losses[-width:] if v is not None and math.isfinite(v)]
        caption = Text(no_wrap=True, overflow="ellipsis")
        caption.append(format_number(self.losses[-1]), style="bold")
        caption.append(f" at step {len(self.losses)}", style="dim")
        if finite:
            caption.append(f", max {format_number(max(finite))}", style="dim")
        if log:
            caption.append(", log scale", style="dim")
        caption.truncate(width, overflow="ellipsis")
        text = Text(no_wrap=True, overflow="crop")
        text.append_text(caption)
        for line in rows:
            text.append("\n")
            for chunk, style in _runs(line):
                text.append(chunk, style=style)
        return text


def _runs(line: str) -> list[tuple[str, str]]:
    """The row cut where the `×` marks of non-finite losses start and stop (they are red)."""
    out: list[tuple[str, str]] = []
    for ch in line:
        style = "bold red" if ch == "×" else ""
        if out and out[-1][1] == style:
            out[-1] = (out[-1][0] + ch, style)
        else:
            out.append((ch, style))
    return out
