"""Memory sizes on the command line (`--memory-budget 2G`, `--rewind-budget 512MiB`, `10%`) and
the memory this process may still use; no torch here, so the command line parses without it."""

from __future__ import annotations

import os
import re
import resource

UNITS = {
    "": 1,
    "b": 1,
    "k": 1 << 10,
    "kb": 1000,
    "kib": 1 << 10,
    "m": 1 << 20,
    "mb": 1000**2,
    "mib": 1 << 20,
    "g": 1 << 30,
    "gb": 1000**3,
    "gib": 1 << 30,
    "t": 1 << 40,
    "tb": 1000**4,
    "tib": 1 << 40,
}
"""Binary multiples for a bare letter and for `KiB`..., decimal ones for `kB`... (as `ls -h`
and `df` read them)."""

_SIZE = re.compile(r"\s*(\d+(?:\.\d*)?|\.\d+)\s*([a-z]*|%)\s*", re.IGNORECASE)


class SizeError(ValueError):
    """A size that does not parse; the message says what is expected."""


def parse_size(text: str) -> int | float:
    """Bytes as an int from `512MiB`, `2G`, `1.5GB`, `4096` or `0`; a share of the available
    memory as a float in (0, 1] from `25%` (resolved when a session starts:
    `memory_budget.resolve_budget`). Raises `SizeError`."""
    match = _SIZE.fullmatch(text)
    if match is None or match.group(2).lower() not in (*UNITS, "%"):
        raise SizeError(
            f"expected a size such as 512MiB, 2G or 25% (of available memory), got {text!r}"
        )
    number, unit = float(match.group(1)), match.group(2).lower()
    if unit == "%":
        if not 0 < number <= 100:
            raise SizeError(f"expected a share above 0% and at most 100%, got {text!r}")
        return number / 100
    return int(number * UNITS[unit])


def host_available() -> int | None:
    """Bytes this process may still allocate on the host: the least of `MemAvailable`, what an
    `RLIMIT_DATA`/`RLIMIT_AS` leaves above what the process maps now, and what a cgroup v2
    `memory.max` leaves above its `memory.current`. None when none of them can be told.

    The one answer to "how much more memory may this process use": `--memory-budget`, the
    rewind budget and the doctor's sandbox all ask it, so a limit one of them honours binds
    them all."""
    candidates = [_mem_available()]
    status = _proc_status()
    for limit, field in ((resource.RLIMIT_DATA, "VmData"), (resource.RLIMIT_AS, "VmSize")):
        soft, _ = resource.getrlimit(limit)
        if soft != resource.RLIM_INFINITY and field in status:
            candidates.append(max(soft - status[field], 0))
    candidates.append(_cgroup_left())
    known = [c for c in candidates if c is not None]
    return min(known) if known else None


def _mem_available() -> int | None:
    """The host's available memory (`MemAvailable`), or None when it cannot be told."""
    try:
        with open("/proc/meminfo") as f:
            for line in f:
                if line.startswith("MemAvailable:"):
                    return int(line.split()[1]) * 1024
    except OSError:
        pass
    try:
        return os.sysconf("SC_AVPHYS_PAGES") * os.sysconf("SC_PAGE_SIZE")
    except (ValueError, OSError, AttributeError):
        return None


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
