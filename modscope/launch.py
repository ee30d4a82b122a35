"""`modscope SCRIPT` and `modscope.inspect()`: build the session controller, run the app on it,
and return the exit status. The one place that joins the app (torch-free) to the engine."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.control.controller import SessionFactory, controller_factory, script_factory
from modscope.core.exit_codes import ExitCode
from modscope.tui.app import ModscopeApp

WORKER_JOIN_TIMEOUT = 2.0
"""Seconds to wait, after the app has left, for the session thread to close the session."""


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
) -> ModscopeApp:
    """The app on `script` (or on what `session_factory` builds, `modscope.inspect()`'s live
    objects: `script` then only names where they come from), not yet running;
    `rewind_budget` for rewind's checkpoints and `memory_budget` for the diff's copy and the
    history (bytes, a share of the available memory as a float, None: the defaults)."""
    factory = session_factory or script_factory(
        script, model_name, rewind_budget=rewind_budget, memory_budget=memory_budget
    )
    return ModscopeApp(
        script,
        controller=controller_factory(factory, script=script, hook_specs=hooks, break_specs=breaks),
        show_traceback=traceback,
        animations=animations,
    )


def run_replay(folder: str) -> int:
    """Open the app on a recording (`modscope replay DIR`); 2 when it cannot be read."""
    from modscope.control.replay import replay_factory
    from modscope.report.replay_command import open_ranks

    ranks = open_ranks(folder)
    if not ranks:
        return ExitCode.FAILED
    script = str(ranks[0].meta.get("script", folder))
    return run_app(ModscopeApp(script, controller=replay_factory(ranks)))


def run_app(app: ModscopeApp, *, join_timeout: float | None = WORKER_JOIN_TIMEOUT) -> int:
    """Run `app` (from `make_app`, or a replay's) to its end: 0 after `q`, 2 when the script
    never loaded. `join_timeout` None waits for the session thread to have closed the session,
    every hook removed (`modscope.inspect()`)."""
    try:
        app.run()
    finally:
        app.worker.stop()
        # A forward still running in the user's code cannot be interrupted; the thread is a
        # daemon, so the process still ends.
        app.worker.join(join_timeout)
    return app.return_code or 0
