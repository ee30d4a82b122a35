"""What modscope's hooks saw on one module, for the detail pane: where a pause stopped, the
last event of each hook kind, and the legacy hook beside the observed backward (Hook Code 3)."""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from rich.console import RenderableType
from rich.table import Table
from rich.text import Text

from modscope.core.contract.fmt import printable, printable_lines, summary_line
from modscope.core.contract.hook_notes import legacy_lesson, module_inputs
from modscope.core.contract.hook_spec import HookKind
from modscope.core.contract.steps import BreakEvent, HookEvent
from modscope.core.contract.tensors import SummaryList
from modscope.tui.labels import display_location

FIELDS = ("args", "output", "grad_input", "grad_output")


class Palette(NamedTuple):
    """The app theme's text colours, for Rich tables and groups built in Python (they cannot
    take Textual's `$variables`); read again at each redraw, so a new theme reaches them."""

    warning: str = "yellow"
    error: str = "red"
    success: str = "green"
    accent: str = "magenta"
    primary: str = "cyan"
    secondary: str = "magenta"

    @classmethod
    def of(cls, variables: Mapping[str, str]) -> Palette:
        """From `App.theme_variables`: the `text-*` colours, readable on the theme's surface."""
        default = cls()
        return cls(
            *(variables.get(f"text-{name}", default[i]) for i, name in enumerate(cls._fields))
        )


DEFAULT_PALETTE = Palette()
"""The colours used without an app (the text export for tests)."""

INLINE = 3
"""Summaries shown on one line per field; the event screen shows them all."""


def inline(values: SummaryList, limit: int = INLINE) -> str:
    """`(tensor 1.0000, tensor 0.0080)`; None entries (no gradient) as `None`."""
    shown = ", ".join(summary_line(s) if s is not None else "None" for s in values[:limit])
    more = f", … {len(values) - limit} more" if len(values) > limit else ""
    return f"({shown}{more})"


def fields_text(e: HookEvent) -> Text:
    """`args (…)  output (…)` for what one event carries."""
    text = Text()
    for name in FIELDS:
        values = getattr(e, name)
        if values is None:
            continue
        if text:
            text.append("  ")
        text.append(f"{name} ", style="dim")
        text.append(inline(values))
    return text


def summaries_table(values: SummaryList, *, autograd: bool = False) -> Table:
    """One row per entry: `[0]  tensor 1.0000`."""
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, justify="right")
    table.add_column(overflow="fold")
    for i, s in enumerate(values):
        text = (
            Text(summary_line(s, autograd=autograd))
            if s is not None
            else Text("None (no gradient reached it)", style="dim")
        )
        table.add_row(f"[{i}]", text)
    return table


def field_sections(
    e: HookEvent, *, counted: bool = False, autograd: bool = False
) -> list[RenderableType]:
    """A heading and a table per field the hook saw (args, output, grad_input, grad_output)."""
    parts: list[RenderableType] = []
    for name in FIELDS:
        values = getattr(e, name)
        if values is None:
            continue
        heading = f"\n{name} ({len(values)})" if counted else name
        parts.append(Text(heading, style="bold"))
        parts.append(summaries_table(values, autograd=autograd))
    return parts


def paused_section(e: HookEvent, palette: Palette = DEFAULT_PALETTE) -> list[RenderableType]:
    """Where the iteration is stopped and what arrived there."""
    head = Text(
        f"paused here: {e.kind.value} hook, step {e.step}, {e.phase.value} phase",
        style=f"bold {palette.accent}",
    )
    parts: list[RenderableType] = [head, *field_sections(e)]
    parts.append(
        Text(
            "c continues · s / n run to the end of the iteration / phase · q quits",
            style="dim italic",
        )
    )
    return parts


def break_section(
    e: BreakEvent,
    palette: Palette = DEFAULT_PALETTE,
    script: str | None = None,
    *,
    replay: bool = False,
) -> list[RenderableType]:
    """Where a break condition stopped the iteration, and the values that tripped it (the
    file of the class's `forward` shown relative to the `script`'s folder); in a `replay`,
    where the recorded run stopped."""
    head = Text(
        f"break: {printable(e.condition)} tripped at step {e.step}, {e.phase.value} phase",
        style=f"bold {palette.error}",
    )
    parts: list[RenderableType] = [head]
    if e.message:
        parts.append(Text(printable_lines(e.message)))
    if e.class_name or e.where:
        where = Text(printable(e.class_name or ""), style="bold")
        if e.where:
            where.append(
                f"  forward at {printable(display_location(e.where, script))}", style="dim"
            )
        parts.append(where)
    for label, values in zip(e.labels, (e.inputs, e.outputs), strict=True):
        if values:
            parts.append(Text(printable(label), style="bold"))
            parts.append(summaries_table(values))
    keys = "c continues · s / n run to the end of the iteration / phase · q quits"
    if replay:
        keys = "the recorded run stopped here · u goes back a step · q quits"
    parts.append(Text(keys, style="dim italic"))
    return parts


def seen_section(
    events: Mapping[HookKind, HookEvent],
    module: str = "",
    type_name: str = "",
    palette: Palette = DEFAULT_PALETTE,
) -> list[RenderableType]:
    """The last event of each of modscope's hook kinds on `module` (of class `type_name`), one
    row each; a legacy backward hook's row sits right above the observed backward's, with the
    lesson about this module and its inputs."""
    if not events:
        return []
    order = [k for k in HookKind if k in events]
    if HookKind.LEGACY_BACKWARD in events and HookKind.BACKWARD in events:
        order.remove(HookKind.LEGACY_BACKWARD)
        order.insert(order.index(HookKind.BACKWARD), HookKind.LEGACY_BACKWARD)
    step = max(e.step for e in events.values())
    table = Table.grid(padding=(0, 1))
    table.add_column(no_wrap=True)
    table.add_column(overflow="fold")
    for kind in order:
        e = events[kind]
        label = Text(kind.value, style=palette.accent)
        if e.step != step:
            label.append(f" (step {e.step})", style="dim")
        row = fields_text(e)
        if e.count > 1:
            row.append(f"  ×{e.count:,}", style="dim")
        table.add_row(label, row)
    parts: list[RenderableType] = [Text(f"hooks saw  (step {step})", style="bold"), table]
    if HookKind.LEGACY_BACKWARD in events:
        lesson = legacy_lesson(
            module, type_name, module_inputs(events), compared=HookKind.BACKWARD in events
        )
        parts.append(Text(printable(lesson), style=palette.warning))
    return parts
