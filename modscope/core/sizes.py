"""Memory sizes on the command line (`--memory-budget 2G`, `--rewind-budget 512MiB`, `10%`) and
the host's free memory; no torch here, so the command line parses without importing it."""

from __future__ import annotations

import os
import re

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


def host_available_bytes() -> int | None:
    """The host's available memory in bytes (`MemAvailable`), or None when it cannot be told."""
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
