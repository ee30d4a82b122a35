"""A session's hook events: drafts as hooks fire, resolved into numbered events once per phase."""

from __future__ import annotations

from collections import deque

from modscope.core.contract.steps import HookEvent
from modscope.core.hooks.manager import EventDraft, events_of


class EventLog:
    """Collects `EventDraft`s while a phase runs (`add`, the hook manager's `emit`) and turns
    them into `HookEvent`s after it (`flush`), numbered from 1 across the session; `events`
    keeps the last `limit` of them."""

    def __init__(self, limit: int) -> None:
        self.events: deque[HookEvent] = deque(maxlen=limit)
        self._drafts: list[EventDraft] = []
        self._seq = 0

    def add(self, draft: EventDraft) -> None:
        self._drafts.append(draft)

    def drop(self) -> None:
        """Forget the drafts of the phase running now (it was interrupted)."""
        self._drafts = []

    def flush(self) -> tuple[HookEvent, ...]:
        """Resolve this phase's drafts into events, all summaries in one batch."""
        drafts, self._drafts = self._drafts, []
        if not drafts:
            return ()
        first = self._seq + 1
        self._seq += len(drafts)
        events = events_of(drafts, range(first, self._seq + 1))
        self.events.extend(events)
        return tuple(events)
