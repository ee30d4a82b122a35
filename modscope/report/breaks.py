"""A break condition in a headless run: the `on_break` that stops it, and the break in words."""

from __future__ import annotations

import os

from rich.text import Text

from modscope.core.contract.fmt import printable, printable_lines, summary_line
from modscope.core.contract.steps import BreakEvent
from modscope.core.hooks.manager import IterationAbandoned


class StopAtBreak:
    """The headless run's `on_break`: keeps the break and drops the iteration, which the session
    unwinds as abandoned (also where the controller drives it, for `--record`)."""

    def __init__(self) -> None:
        self.event: BreakEvent | None = None

    def __call__(self, event: BreakEvent) -> None:
        self.event = event
        raise IterationAbandoned()


def break_paragraph(event: BreakEvent) -> Text:
    """A break for a person: the condition, step and phase, the module, its class and where
    its forward is, what happened, then the values that tripped it, one line each."""
    text = Text("break ", style="bold red")
    text.append(printable(event.condition), style="bold")
    text.append(f" at step {event.step}, {event.phase.value} phase")
    if event.module is not None:
        text.append(": ")
        text.append(printable(event.module or "(root)"), style="bold")
        text.append(f" ({printable(event.class_name or '?')})")
    if event.where:
        text.append(f" at {printable(_shown_where(event.where))}")
    text.append("\n  " + printable_lines(event.message))
    width = max((len(label) for label in event.labels), default=0)
    for label, seen in zip(event.labels, (event.inputs, event.outputs), strict=True):
        for summary in seen:
            text.append(f"\n  {label:<{width}}  ", style="dim")
            text.append(summary_line(summary) if summary is not None else "-")
    return text


def _shown_where(where: str) -> str:
    """`file:line` with the file relative to the working folder when it lies inside it (the
    JSON keeps the absolute path)."""
    file, _, line = where.rpartition(":")
    try:
        relative = os.path.relpath(file)
    except ValueError:  # another drive (Windows)
        return where
    return where if relative.startswith("..") else f"{relative}:{line}"
