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
    """The app on `script` (or on what `session_factory` builds), not yet running;
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
    app = ModscopeApp(str(ranks[0].meta.get("script", folder)), controller=replay_factory(ranks))
    app.run()
    app.worker.stop()
    app.worker.join(WORKER_JOIN_TIMEOUT)
    return app.return_code or 0


def run_app(
    script: str,
    *,
    hooks: Sequence[str] = (),
    breaks: Sequence[str] = (),
    rewind_budget: int | float | None = None,
    model_name: str | None = None,
    traceback: bool = False,
    session_factory: SessionFactory | None = None,
    join_timeout: float | None = WORKER_JOIN_TIMEOUT,
    memory_budget: int | float | None = None,
) -> int:
    """Open the app on `script`; 0 after `q`, 2 when the script never loaded.

    `session_factory` builds the session instead of loading `script` (`modscope.inspect()`
    hands in live objects; `script` then only names where they come from). `join_timeout`
    None waits for the session thread to have closed the session, every hook removed.
    """
    app = make_app(
        script,
        hooks=hooks,
        breaks=breaks,
        rewind_budget=rewind_budget,
        model_name=model_name,
        traceback=traceback,
        session_factory=session_factory,
        memory_budget=memory_budget,
    )
    try:
        app.run()
    finally:
        app.worker.stop()
        # A forward still running in the user's code cannot be interrupted; the thread is a
        # daemon, so the process still ends.
        app.worker.join(join_timeout)
    return app.return_code or 0
