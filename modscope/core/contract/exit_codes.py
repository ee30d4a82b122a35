"""The exit status every modscope command returns (`modscope tree`, `run`, `check`, the app)."""

from __future__ import annotations

import enum


class ExitCode(enum.IntEnum):
    """What a command's exit status says; an `IntEnum`, so `main()` returns a plain int."""

    OK = 0
    FINDINGS = 1
    """`modscope check` found something of error severity."""
    FAILED = 2
    """The script failed to load or raised, or a flag or hook spec was wrong."""
    INTERRUPTED = 130
    """Ctrl+C, as shells report a SIGINT."""
