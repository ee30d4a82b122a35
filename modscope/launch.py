"""`modscope SCRIPT` and `modscope.inspect()`: build the session controller, run the app on it,
and return the exit status. The one place that joins the app (torch-free) to the engine."""

from __future__ import annotations

import contextlib
import os
import sys
from collections.abc import Sequence

from modscope.control.controller import (
    OwnLoopView,
    SessionFactory,
    controller_factory,
    script_factory,
)
from modscope.core.contract.exit_codes import ExitCode
from modscope.core.session import SessionOptions
from modscope.tui.app import ModscopeApp

WORKER_JOIN_TIMEOUT = 0.1
"""Seconds to wait, after the app has left, for the session thread to close the session (it
starts as `q` is pressed); past them it is still in the user's code (a forward that runs on),
and the process ends without it."""


def make_app(
    script: str,
    *,
    hooks: Sequence[str] = (),
    breaks: Sequence[str] = (),
    rewind_budget: int | float | None = None,
    model_name: str | None = None,
    traceback: bool = False,
    session_factory: SessionFactory | None = None,
    animations: bool = True,
    memory_budget: int | float | None = None,
    own_loop: OwnLoopView | None = None,
) -> ModscopeApp:
    """The app on `script` (or on what `session_factory` builds, `modscope.inspect()`'s live
    objects: `script` then only names where they come from), not yet running;
    `rewind_budget` for rewind's checkpoints and `memory_budget` for the diff's copy and the
    history (bytes, a share of the available memory as a float, None: the defaults);
    `own_loop` for the app at a break in the user's own loop (`modscope.watch()`)."""
    options = SessionOptions(rewind=True, rewind_budget=rewind_budget, memory_budget=memory_budget)
    factory = session_factory or script_factory(script, model_name, options)
    return ModscopeApp(
        script,
        controller=controller_factory(
            factory, script=script, hook_specs=hooks, break_specs=breaks, own_loop=own_loop
        ),
        show_traceback=traceback,
        animations=animations,
    )


def run_replay(folder: str) -> int:
    """Open the app on a recording (`modscope replay DIR`); one that cannot be read opens on
    the error screen that says why (2 after `q`)."""
    from modscope.control.recording import RecordingError
    from modscope.control.replay import replay_factory
    from modscope.report.common import print_message
    from modscope.report.replay_command import open_ranks

    try:
        ranks = open_ranks(folder, raise_error=True)
    except RecordingError as exc:
        status = run_app(ModscopeApp(folder, controller=replay_factory(exc, folder=folder)))
        print_message(str(exc))  # still on the terminal after the app has left
        return status or ExitCode.FAILED
    script = str(ranks[0].meta.get("script", folder))
    return run_app(ModscopeApp(script, controller=replay_factory(ranks)))


def run_app(app: ModscopeApp, *, join_timeout: float | None = WORKER_JOIN_TIMEOUT) -> int:
    """Run `app` (from `make_app`, or a replay's) to its end: 0 after `q`, 2 when the script
    never loaded. `join_timeout` None waits for the session thread to have closed the session,
    every hook removed (`modscope.inspect()`, whose caller goes on).

    Otherwise a session thread still in the user's code after `join_timeout` (a forward that
    runs on; torch work cannot be interrupted) is not waited for: the terminal is already
    restored, the iteration is abandoned, and the process ends at once with the app's status
    (`os._exit`, stdout and stderr flushed first). modscope writes no file from the app, so
    nothing of its own is left half-written."""
    try:
        app.run()
    finally:
        app.worker.stop()
        ended = app.worker.join(join_timeout)
    status = app.return_code or 0
    if not ended and join_timeout is not None:
        # Interpreter shutdown is slow with torch loaded and would tear torch down under the
        # thread still inside it: leave now, as the user asked.
        for stream in (sys.stdout, sys.stderr):
            with contextlib.suppress(Exception):
                stream.flush()
        os._exit(status)
    return status
