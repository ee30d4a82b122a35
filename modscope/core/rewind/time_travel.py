"""Rewind and "what if", the Session's time travel (docs/time_travel.md): the checkpoints it
restores and the original timeline it compares against, kept apart from the stepping."""

from __future__ import annotations

from collections import deque
from collections.abc import Callable
from dataclasses import replace
from typing import Any

from torch import nn

from modscope.core.contract.steps import HookEvent, StepRecord
from modscope.core.contract.timelines import Timeline, TimelineComparison
from modscope.core.model.state import state_tensors
from modscope.core.rewind.checkpoints import Checkpoints, RewindError
from modscope.core.stats.statediff import compare_states


class TimeTravel:
    """A Session's rewind and "what if": its checkpoints (None: rewind is off), the model they
    restore, and the original timeline (`original`). The session's present (its step, history
    and events) is passed in to each call."""

    def __init__(self, checkpoints: Checkpoints | None, *, model: nn.Module) -> None:
        self.checkpoints = checkpoints
        self.model = model
        self.original: Timeline | None = None
        """The timeline the first rewind went back over, to compare re-runs against
        (`compare_timelines`); None before any rewind that left steps behind."""

    def restore(
        self,
        step: int,
        *,
        now: int,
        partial: bool,
        history: deque[StepRecord],
        events: deque[HookEvent],
        end_iteration: Callable[[], None],
    ) -> int | None:
        """The first half of `Session.rewind`: restore the checkpoint nearest before `step`
        (after `end_iteration()` dropped the iteration under way) and drop the `history` and
        `events` after it. Returns the step restored (the session re-runs from there to
        `step`), or None when the session already stands at `step` whole. Raises `ValueError`
        for a step outside 0..`now`, `RewindError` when rewind is off or the step is before the
        oldest checkpoint."""
        if not 0 <= step <= now:
            raise ValueError(f"step {step} is not in 0..{now}")
        if self.checkpoints is None:
            raise RewindError(self.note())
        if step == now and not partial:
            return None
        kept = self._keep_original(step, now=now, history=history)
        end_iteration()
        try:
            base = self.checkpoints.restore(step)
        except RewindError:
            if kept:
                self.original = None
                self.checkpoints.forget_other()
            raise
        self.checkpoints.truncate(base)
        while history and history[-1].step > base:
            history.pop()
        left = [e for e in events if e.step <= base]
        events.clear()
        events.extend(left)
        return base

    def _keep_original(self, step: int, *, now: int, history: deque[StepRecord]) -> bool:
        """Before a rewind to `step`: the first that leaves steps behind keeps them as the
        original timeline; a later one to before its fork moves the fork. True when kept now."""
        assert self.checkpoints is not None
        if self.original is not None:
            if step < self.original.fork:
                self.checkpoints.widen_other(step, self.original.fork)
                self.original = replace(self.original, fork=step)
            return False
        if step >= now:
            return False
        self.checkpoints.keep_other(step, now)
        self.original = Timeline(fork=step, end=now, records=tuple(history))
        return True

    def compare(
        self, step: int | None, *, now: int, partial: bool, history: deque[StepRecord]
    ) -> TimelineComparison:
        """`Session.compare_timelines`: this timeline's `state_dict` after `step` (default:
        `now`, the last step run) against the original timeline's after the same step. Raises
        `RewindError` when there is no original timeline yet and `ValueError` for a step
        outside 0..`now`."""
        o = self.original
        if o is None:
            raise RewindError(
                "there is no other timeline yet: rewind to an earlier step, change something "
                "(attach a hook), and run on"
            )
        k = now if step is None else step
        if not 0 <= k <= now:
            raise ValueError(f"step {k} is not in 0..{now}")
        ours = next((r for r in history if r.step == k), None)
        theirs = o.record(k)
        comparison = TimelineComparison(
            step=k,
            fork=o.fork,
            end=o.end,
            loss=ours.loss if ours else None,
            original_loss=theirs.loss if theirs else None,
            ours=dict(ours.state) if ours else {},
            theirs=dict(theirs.state) if theirs else {},
        )
        live = k == now and not partial
        return replace(comparison, **self._timeline_diff(k, o, live=live))

    def _timeline_diff(self, k: int, o: Timeline, *, live: bool) -> dict[str, Any]:
        """`diff` or `note` of `compare` for step `k` (`live`: the model holds its state)."""
        assert self.checkpoints is not None
        if k <= o.fork:
            return {"note": f"step {k} comes before the timelines part (step {o.fork})"}
        if k > o.end:
            return {"note": f"the original timeline ends at step {o.end}"}
        theirs = self.checkpoints.other_state(k)
        if theirs is None:
            kept = ", ".join(str(s) for s in self.checkpoints.other_steps()) or "none"
            why = "thinned away to keep the rewind budget"
            return {
                "note": f"the original timeline's state after step {k} was {why} (kept: {kept})"
            }
        ours = state_tensors(self.model) if live else self.checkpoints.state(k)
        if ours is None:
            return {"note": f"this timeline's state after step {k} was thinned away"}
        return {"diff": compare_states(ours, theirs)}

    def reachable_steps(self, now: int) -> tuple[int, ...]:
        """`Session.reachable_steps`: the kept checkpoints' steps and `now`; empty when rewind
        is off."""
        if self.checkpoints is None or not self.checkpoints.enabled:
            return ()
        return tuple(sorted({*self.checkpoints.steps(), now}))

    def note(self) -> str | None:
        """Why rewind is off (None while it is on)."""
        if self.checkpoints is None:
            return "rewind is off: the session was made with rewind=False"
        return self.checkpoints.note
