"""Rewind and "what if", the Session's time travel (docs/time_travel.md), kept apart from the
stepping they go back over: a mixin of `core.session.Session`, which owns every attribute used
here (the checkpoints, the history, the tracker, the breaks)."""

from __future__ import annotations

from collections import deque
from dataclasses import replace
from typing import TYPE_CHECKING, Any

from torch import nn

from modscope.core.checkpoints import Checkpoints, RewindError
from modscope.core.model_state import state_tensors
from modscope.core.statediff import StateTracker, compare_states
from modscope.core.timelines import Timeline, TimelineComparison
from modscope.core.types import HookEvent, PhaseResult, StepRecord, TensorSummary

if TYPE_CHECKING:
    from modscope.core.breaks import BreakWatch


class TimeTravel:
    """`rewind`, `compare_timelines`, `reachable_steps` and `rewind_note` of a Session."""

    step: int
    model: nn.Module
    history: deque[StepRecord]
    events: deque[HookEvent]
    last_loss: float | None
    last_output: TensorSummary | None
    original: Timeline | None
    _checkpoints: Checkpoints | None
    _tracker: StateTracker
    _baseline_due: bool
    _dropped: bool
    _breaks: BreakWatch | None

    if TYPE_CHECKING:  # provided by Session

        @property
        def partial(self) -> bool: ...
        def run_iteration(self) -> PhaseResult: ...
        def _reset_iteration(self) -> None: ...

    def rewind(self, step: int) -> None:
        """Go back to the state after `step` iterations (0: as loaded), dropping a partial
        iteration (or what one dropped halfway left: `partial`) and the history after `step`.
        A step whose checkpoint was thinned away is reached from the nearest earlier one by
        re-running the iterations between (with the hooks attached now, break conditions not
        checked). Raises `ValueError` for a step outside 0..`step`, `RewindError` when rewind
        is off or the step is before the oldest checkpoint, or when an iteration of the re-run
        fails."""
        if not 0 <= step <= self.step:
            raise ValueError(f"step {step} is not in 0..{self.step}")
        if self._checkpoints is None:
            raise RewindError(self.rewind_note())
        if step == self.step and not self.partial:
            return
        kept = self._keep_original(step)
        self._reset_iteration()
        try:
            self.step = base = self._checkpoints.restore(step)
        except RewindError:
            if kept:
                self.original = None
                self._checkpoints.forget_other()
            raise
        self._checkpoints.truncate(base)
        self._dropped = False
        while self.history and self.history[-1].step > base:
            self.history.pop()
        kept = [e for e in self.events if e.step <= base]
        self.events.clear()
        self.events.extend(kept)
        last = self.history[-1] if self.history and self.history[-1].step == base else None
        self.last_loss = last.loss if last else None
        self.last_output = last.output if last else None
        self._tracker.reset(state_tensors(self.model))
        self._baseline_due = False
        watch, self._breaks = self._breaks, None
        try:
            while self.step < step:
                result = self.run_iteration()
                if result.error is not None or result.abandoned:
                    raise RewindError(f"re-running step {self.step + 1} failed: {result.error}")
        finally:
            self._breaks = watch

    def _keep_original(self, step: int) -> bool:
        """Before a rewind to `step`: the first that leaves steps behind keeps them as the
        original timeline; a later one to before its fork moves the fork. True when kept now."""
        assert self._checkpoints is not None
        if self.original is not None:
            if step < self.original.fork:
                self._checkpoints.widen_other(step, self.original.fork)
                self.original = replace(self.original, fork=step)
            return False
        if step >= self.step:
            return False
        self._checkpoints.keep_other(step, self.step)
        self.original = Timeline(fork=step, end=self.step, records=tuple(self.history))
        return True

    def compare_timelines(self, step: int | None = None) -> TimelineComparison:
        """This timeline's `state_dict` after `step` (default: the last step run) against the
        original timeline's after the same step ("what if": a hook attached after a rewind,
        what did it change?). Raises `RewindError` when there is no original timeline yet
        and `ValueError` for a step outside 0..`step`."""
        o = self.original
        if o is None:
            raise RewindError(
                "there is no other timeline yet: rewind to an earlier step, change something "
                "(attach a hook), and run on"
            )
        k = self.step if step is None else step
        if not 0 <= k <= self.step:
            raise ValueError(f"step {k} is not in 0..{self.step}")
        ours = next((r for r in self.history if r.step == k), None)
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
        return replace(comparison, **self._timeline_diff(k, o))

    def _timeline_diff(self, k: int, o: Timeline) -> dict[str, Any]:
        """`diff` or `note` of `compare_timelines` for step `k`."""
        assert self._checkpoints is not None
        if k <= o.fork:
            return {"note": f"step {k} comes before the timelines part (step {o.fork})"}
        if k > o.end:
            return {"note": f"the original timeline ends at step {o.end}"}
        theirs = self._checkpoints.other_state(k)
        if theirs is None:
            kept = ", ".join(str(s) for s in self._checkpoints.other_steps()) or "none"
            why = "thinned away to keep the rewind budget"
            return {
                "note": f"the original timeline's state after step {k} was {why} (kept: {kept})"
            }
        live = k == self.step and not self.partial
        ours = state_tensors(self.model) if live else self._checkpoints.state(k)
        if ours is None:
            return {"note": f"this timeline's state after step {k} was thinned away"}
        return {"diff": compare_states(ours, theirs)}

    def reachable_steps(self) -> tuple[int, ...]:
        """The steps `rewind` restores without re-running (kept checkpoints, and the present);
        any step from the first of them on can be rewound to. Empty when rewind is off."""
        if self._checkpoints is None or not self._checkpoints.enabled:
            return ()
        return tuple(sorted({*self._checkpoints.steps(), self.step}))

    def rewind_note(self) -> str | None:
        """Why rewind is off (None while it is on)."""
        if self._checkpoints is None:
            return "rewind is off: the session was made with rewind=False"
        return self._checkpoints.note
