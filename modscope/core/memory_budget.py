"""How much memory modscope may keep beside the model: the `--memory-budget`, and free memory
as this process can really use it (the host's, an rlimit's or a cgroup's, whichever is least).

The budget bounds what a session keeps that grows with the model: the previous `state_dict`
copy the diff compares against (`statediff`), and the step history (`Session.history`). Above
it, a key's copy gives way to a digest and a bounded sample (`statediff`), and the history
keeps fewer steps. Rewind has a budget of its own (`checkpoints`).
"""

from __future__ import annotations

import os
import resource

from modscope.core.types import StepRecord

DEFAULT_SHARE = 0.25
"""The default budget: this share of the memory available when the session starts."""

HISTORY_SHARE = 0.25
"""The share of the budget the step history may take; the previous-state copy has the rest."""


def host_available() -> int | None:
    """Bytes this process may still allocate on the host: the least of `MemAvailable`, what an
    `RLIMIT_DATA`/`RLIMIT_AS` leaves above what the process maps now, and what a cgroup v2
    `memory.max` leaves above its `memory.current`. None when none of them can be told."""
    from modscope.core.rng import available_bytes  # torch: not for the command line's parsing

    candidates = [available_bytes("cpu")]
    status = _proc_status()
    for limit, field in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and field in status:
            candidates.append(max(soft - status[field], 0))
    candidates.append(_cgroup_left())
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def resolve_budget(budget: int | float | None) -> int | None:
    """The budget in bytes: `budget` bytes as given, a share of the available host memory, or
    (None) `DEFAULT_SHARE` of it; None when the available memory cannot be told (no bound)."""
    if isinstance(budget, int):
        return budget
    share = DEFAULT_SHARE if budget is None else budget
    available = host_available()
    return None if available is None else int(available * share)


def _proc_status() -> dict[str, int]:
    """`/proc/self/status` sizes in bytes (`VmData`, `VmSize`, ...); empty where unreadable."""
    sizes: dict[str, int] = {}
    try:
        with open("/proc/self/status") as f:
            for line in f:
                name, _, rest = line.partition(":")
                parts = rest.split()
                if len(parts) == 2 and parts[1] == "kB":
                    sizes[name] = int(parts[0]) * 1024
    except OSError:
        pass
    return sizes


def _cgroup_left() -> int | None:
    """`memory.max - memory.current` of this process's cgroup v2, or None (no limit, no v2)."""
    try:
        with open("/proc/self/cgroup") as f:
            path = next(line.split(":", 2)[2].strip() for line in f if line.startswith("0::"))
        base = os.path.join("/sys/fs/cgroup", path.lstrip("/"))
        with open(os.path.join(base, "memory.max")) as f:
            limit = f.read().strip()
        if limit == "max":
            return None
        with open(os.path.join(base, "memory.current")) as f:
            return max(int(limit) - int(f.read()), 0)
    except (OSError, StopIteration, ValueError):
        return None


SUMMARY_BYTES = 600
"""About what one summary in a step record takes with everything the record holds for it
(measured with tracemalloc: 583 bytes per summary on a model of 1,320 parameter tensors)."""


def copy_budget(budget: int | None) -> int | None:
    """The bytes the previous-state copy may take: the budget less the history's share."""
    return None if budget is None else int(budget * (1 - HISTORY_SHARE))


def history_limit(budget: int | None, record: StepRecord, most: int) -> int:
    """How many step records like `record` the history keeps: `most`, or fewer (at least one)
    when their summaries would take more than the history's share of `budget`."""
    if budget is None:
        return most
    per_record = SUMMARY_BYTES * (len(record.state) + len(record.grads) + 1)
    return max(1, min(most, int(budget * HISTORY_SHARE) // per_record))
