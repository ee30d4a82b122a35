"""The app without a terminal (cron, CI, `> log`): `modscope SCRIPT` and `modscope replay DIR`
say so at once on stderr and exit 2, before Textual can write escape codes into the log."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from tests.helpers import POWLOG, ROOT

ESC = "\x1b"


def modscope(*args: str, stdin: int | None = subprocess.DEVNULL) -> subprocess.CompletedProcess:
    """`python -m modscope ARGS` with stdout and stderr captured (so neither is a terminal)."""
    # Without the check the app waits for keys forever: the timeout makes that a failure.
    return subprocess.run(
        [sys.executable, "-m", "modscope", *args],
        stdin=stdin,
        capture_output=True,
        text=True,
        timeout=60,
        cwd=ROOT,
    )


@pytest.mark.parametrize(
    ("args", "advice"),
    [
        ([POWLOG], f"`modscope run {POWLOG} --steps N` (--json for JSON lines)"),
        (["replay", "my recording"], "`modscope replay 'my recording' --json`"),
    ],
)
def test_no_terminal_is_said_at_once_with_exit_2(args, advice):
    done = modscope(*args)
    assert done.returncode == 2
    assert done.stdout == ""
    assert ESC not in done.stderr
    assert "stdin is not a terminal, and the app needs one" in done.stderr
    assert advice in done.stderr


def test_stdout_redirected_to_a_log_is_refused_even_from_a_terminal():
    # stdin a terminal (a pseudo-terminal here), stdout a file: `modscope SCRIPT > log`.
    parent, child = os.openpty()
    try:
        done = modscope(POWLOG, stdin=child)
    finally:
        os.close(parent)
        os.close(child)
    assert done.returncode == 2
    assert done.stdout == ""
    assert "modscope: stdout is not a terminal, and the app needs one" in done.stderr
    assert f"`modscope check {POWLOG}`" in done.stderr
