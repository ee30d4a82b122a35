"""Coalescing bursts of hook events: one entry per (step, phase, module, kind) with a count.

A hook on every module of a 10,000-module model fires 10,000 times a step, and a module called
in a loop fires once per call. The UI shows each (step, phase, module, kind) once, as its last
firing with `count` set to how many times it fired, and only the newest few of a burst (as the
log does).
"""

from __future__ import annotations

from collections.abc import Sequence
from dataclasses import dataclass, replace

from modscope.core.contract.steps import HookEvent

SHOWN_PER_BURST = 20
"""Entries of one burst shown one per line, in the log and the hook events pane alike; the
earlier ones are counted."""


@dataclass(frozen=True)
class Burst:
    """A burst of events, coalesced: the newest entries to show and the earlier ones left out."""

    shown: tuple[HookEvent, ...]
    hidden_events: int = 0
    hidden_entries: int = 0

    @property
    def more_text(self) -> str:
        """`… 9,980 earlier events (9,980 module hooks) not shown`, or "" when none."""
        if not self.hidden_events:
            return ""
        events = f"{self.hidden_events:,} earlier event{'s' if self.hidden_events != 1 else ''}"
        entries = f"{self.hidden_entries:,} module hook{'s' if self.hidden_entries != 1 else ''}"
        return f"… {events} ({entries}) not shown: select a module to see what its hooks saw"


def coalesce(events: Sequence[HookEvent]) -> list[HookEvent]:
    """One event per (step, phase, module, kind, action), in order of first firing: the last
    firing, with `count` the number of firings."""
    last: dict[tuple[object, ...], HookEvent] = {}
    counts: dict[tuple[object, ...], int] = {}
    for e in events:
        key = (e.step, e.phase, e.module, e.kind, e.action)
        last[key] = e
        counts[key] = counts.get(key, 0) + e.count
    return [e if counts[k] == e.count else replace(e, count=counts[k]) for k, e in last.items()]


def burst(groups: Sequence[HookEvent], limit: int = SHOWN_PER_BURST) -> Burst:
    """A burst of coalesced events (`coalesce`) as the events pane shows them: the newest
    `limit` entries, and a count of the rest."""
    if len(groups) <= limit:
        return Burst(tuple(groups))
    rest = groups[:-limit]
    return Burst(tuple(groups[-limit:]), sum(e.count for e in rest), len(rest))
