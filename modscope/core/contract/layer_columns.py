"""The columns of a layers table, shared by `run --layers` and the app's layers view (no torch):
what each shows, how it reads, and its history over steps for a sparkline."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from modscope.core.contract.layer_types import LayerStats, LayerStep


@dataclass(frozen=True)
class LayerColumn:
    """One numeric column: its key (as in the JSON), its title, and how to read it."""

    key: str
    title: str
    value: Callable[[LayerStats], float | None]
    percent: bool = False

    def cell(self, stats: LayerStats) -> str:
        """The value as a person reads it: `67%` for fractions, `0.2309` or `1.2e-05`, `-`."""
        v = self.value(stats)
        if v is None:
            return "-"
        if self.percent:
            return f"{v:.0%}" if v in (0.0, 1.0) or 0.01 <= v <= 0.99 else f"{v:.1%}"
        return short_number(v)

    def history(self, steps: Sequence[Mapping[str, LayerStats]], path: str) -> list[float | None]:
        """The column's value for the module at `path` at each of `steps` (`by_path` of each
        step; None where it is absent)."""
        out: list[float | None] = []
        for step in steps:
            stats = step.get(path)
            out.append(self.value(stats) if stats is not None else None)
        return out


def by_path(step: LayerStep) -> dict[str, LayerStats]:
    """A step's modules by path, for `LayerColumn.history`."""
    return {m.path: m for m in step.modules}


def short_number(v: float) -> str:
    """Four significant digits: `0.2309`, `12.35`, `1.234e-05`."""
    if v == 0:
        return "0"
    if 1e-3 <= abs(v) < 1e5:
        return f"{v:.4g}"
    return f"{v:.3e}"


def _output(name: str) -> Callable[[LayerStats], float | None]:
    def read(stats: LayerStats) -> float | None:
        return getattr(stats.output, name) if stats.output is not None else None

    return read


LAYER_COLUMNS: tuple[LayerColumn, ...] = (
    LayerColumn("mean", "mean", _output("mean")),
    LayerColumn("std", "std", _output("std")),
    LayerColumn("absmax", "absmax", _output("absmax")),
    LayerColumn("dead", "dead", lambda s: s.dead, percent=True),
    LayerColumn("saturated", "saturated", lambda s: s.saturated, percent=True),
    LayerColumn("grad_norm", "grad norm", lambda s: s.grad_norm),
    LayerColumn("update_ratio", "update ratio", lambda s: s.update_ratio),
)
"""In the order tables show them, after the module's path and type."""

TREND_COLUMN = "update_ratio"
"""Whose history the sparkline shows when the table is not sorted by a numeric column."""


def column(key: str) -> LayerColumn:
    """The column with this key (raises KeyError for another)."""
    for c in LAYER_COLUMNS:
        if c.key == key:
            return c
    raise KeyError(key)
