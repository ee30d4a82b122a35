"""What if: the timeline a rewind left, kept to compare a re-run against (no torch here).

After a rewind the session goes on in a new timeline; the steps it went back over are the
original timeline. The first rewind that leaves steps behind keeps them (`Session.original`):
their records (loss, summaries, diff) and, within the rewind budget, the model state after each
(`core.rewind.checkpoints`). Later rewinds keep that same original, so trying one change after
another compares each with the first run; a reload forgets it. docs/time_travel.md, "What if".
"""

from __future__ import annotations

from dataclasses import dataclass, field

from modscope.core.contract.steps import StateDiff, StepRecord
from modscope.core.contract.tensors import TensorSummary


@dataclass(frozen=True)
class Timeline:
    """The original timeline: its steps 1..`end`, of which those after `fork` differ from
    the timeline running now (the earliest step a rewind went back to)."""

    fork: int
    end: int
    records: tuple[StepRecord, ...] = field(default=(), repr=False)

    def record(self, step: int) -> StepRecord | None:
        """The record of `step` (None for step 0, or a step older than the history kept)."""
        for r in self.records:
            if r.step == step:
                return r
        return None

    def losses(self) -> tuple[float | None, ...]:
        """The loss after each step 1..`end` (None where no record is kept)."""
        by_step = {r.step: r.loss for r in self.records}
        return tuple(by_step.get(step) for step in range(1, self.end + 1))


@dataclass(frozen=True)
class TimelineComparison:
    """This timeline's `state_dict` after `step` against the original timeline's after the
    same step: `diff.changed` lists the keys whose values differ (max |Δ| and ‖this - original‖ /
    ‖original‖ per key), `diff.unchanged` those bit-identical. `diff` is None when there is
    nothing to compare, and `note` says why (the step comes before the fork, is past the
    original's end, or its state was thinned away)."""

    step: int
    fork: int
    end: int
    diff: StateDiff | None = None
    note: str | None = None
    loss: float | None = None
    original_loss: float | None = None
    ours: dict[str, TensorSummary] = field(default_factory=dict)
    """This timeline's summaries after `step` (from its record)."""
    theirs: dict[str, TensorSummary] = field(default_factory=dict)
    """The original timeline's summaries after `step` (from its record)."""
