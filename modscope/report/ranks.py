"""Many ranks (`torchrun`): rank 0 reports as one process would, the others stay quiet
unless they fail (docs/design.md section 2, "Many ranks")."""

from __future__ import annotations

import argparse
import contextlib
import functools
import os
import sys
import tempfile
from collections.abc import Callable

from modscope.core.process_rank import launched_rank
from modscope.report.common import report_output


def on_rank_zero(
    command: Callable[[argparse.Namespace], int],
    args: argparse.Namespace,
    *,
    hold_stdout: bool = False,
) -> int:
    """`command(args)` in this process, its report alone on stdout (`report_output`); under
    torchrun (`RANK` and `WORLD_SIZE` set) on a rank other than 0 inside `QuietRank`, and on
    every rank the script's process group destroyed after it (`leave_process_group`)."""
    output = functools.partial(report_output, as_json=bool(getattr(args, "json", False)))
    place = launched_rank()
    if place is None:
        with output():
            return command(args)
    try:
        if place.rank == 0:
            with output():
                return command(args)
        with QuietRank(place.rank, hold_stdout=hold_stdout) as quiet, output():
            quiet.status = command(args)
        return quiet.status
    finally:
        leave_process_group()


def leave_process_group() -> None:
    """Destroy the script's process group once the command is over, as a script ends its own:
    one left to the interpreter's exit can abort there (gloo's threads: "terminate called
    without an active exception"). A rarer abort of the same kind comes from a race in gloo's
    own teardown, which modscope cannot reach."""
    import torch.distributed as dist

    if dist.is_available() and dist.is_initialized():
        with contextlib.suppress(Exception):
            dist.destroy_process_group()


class QuietRank:
    """Keeps a rank other than 0 off the terminal: its stderr (the script's prints, warnings,
    errors, torch's own C++ logs) goes to a temporary file that is written out, each line
    naming the rank, only when the rank fails (`status` not 0, or an exception); its stdout
    goes nowhere, or with `hold_stdout` into the same file (`check`: its report is what a
    failing rank has to say). The file descriptors are redirected, so output that bypasses
    `sys.stdout`/`sys.stderr` is held too."""

    active = False
    """True while a rank's output is held (a break is then also said on its stderr)."""

    def __init__(self, rank: int, *, hold_stdout: bool = False) -> None:
        self.rank = rank
        self.hold_stdout = hold_stdout
        self.status = 0

    def __enter__(self) -> QuietRank:
        QuietRank.active = True
        sys.stdout.flush()
        sys.stderr.flush()
        self._held = tempfile.TemporaryFile()
        self._saved = (os.dup(1), os.dup(2))
        if self.hold_stdout:
            os.dup2(self._held.fileno(), 1)
        else:
            with open(os.devnull, "wb") as devnull:
                os.dup2(devnull.fileno(), 1)
        os.dup2(self._held.fileno(), 2)
        return self

    def __exit__(self, exc_type: object, *exc: object) -> None:
        QuietRank.active = False
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(OSError, ValueError):
                stream.flush()
        for fd, saved in zip((1, 2), self._saved, strict=True):
            os.dup2(saved, fd)
            os.close(saved)
        if exc_type is not None or self.status != 0:
            self._held.seek(0)
            text = self._held.read().decode("utf-8", "replace")
            prefix = f"[rank {self.rank}] "
            sys.stderr.write("".join(prefix + line for line in text.splitlines(keepends=True)))
            sys.stderr.flush()
        self._held.close()
