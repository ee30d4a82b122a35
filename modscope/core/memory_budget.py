"""How much memory modscope may keep beside the model: the `--memory-budget`, a share of the
memory this process may still use (`sizes.host_available`: the host's, an rlimit's or a
cgroup's, whichever is least).

The budget bounds what a session keeps that grows with the model: the previous `state_dict`
copy the diff compares against (`statediff`), and the step history (`Session.history`). Above
it, a key's copy gives way to a digest and a bounded sample (`statediff`), and the history
keeps fewer steps. Rewind has a budget of its own (`checkpoints`).

Every byte it counts is host memory: the previous copy of a tensor on a GPU lives on the host
too (`statediff`), so a model on a device never gets a second copy of itself in device memory;
the diff's temporaries on the device are a chunk's size (`chunked`). The copy is one per key,
overwritten in place at each step, so the budget counts each key's bytes once.
"""

from __future__ import annotations

from modscope.core.contract.sizes import host_available
from modscope.core.contract.steps import StepRecord

DEFAULT_SHARE = 0.25
"""The default budget: this share of the memory available when the session starts."""

HISTORY_SHARE = 0.25
"""The share of the budget the step history may take; the previous-state copy has the rest."""


def resolve_budget(budget: int | float | None) -> int | None:
    """The budget in bytes: `budget` bytes as given, a share of the available host memory, or
    (None) `DEFAULT_SHARE` of it; None when the available memory cannot be told (no bound)."""
    if isinstance(budget, int):
        return budget
    share = DEFAULT_SHARE if budget is None else budget
    available = host_available()
    return None if available is None else int(available * share)


SUMMARY_BYTES = 600
"""About what one summary in a step record takes with everything the record holds for it
(measured with tracemalloc: 583 bytes per summary on a model of 1,320 parameter tensors)."""


def copy_budget(budget: int | None) -> int | None:
    """The bytes the previous-state copy may take: the budget less the history's share."""
    return None if budget is None else int(budget * (1 - HISTORY_SHARE))


def history_limit(budget: int | None, record: StepRecord, most: int) -> int:
    """How many step records like `record` the history keeps: `most`, or fewer (at least one,
    unless `most` is 0) when their summaries would take more than the history's share of
    `budget`."""
    if budget is None:
        return most
    per_record = SUMMARY_BYTES * (len(record.state) + len(record.grads) + 1)
    return min(most, max(1, int(budget * HISTORY_SHARE) // per_record))
