"""`modscope SCRIPT`: run the app and return its exit status."""

from __future__ import annotations

from collections.abc import Sequence

from modscope.tui import worker
from modscope.tui.app import ModscopeApp

WORKER_JOIN_TIMEOUT = 2.0
"""Seconds to wait, after the app has left, for the worker to close the session."""


def run_app(
    script: str,
    *,
    hooks: Sequence[str] = (),
    model_name: str | None = None,
    traceback: bool = False,
    session_factory: worker.SessionFactory | None = None,
    join_timeout: float | None = WORKER_JOIN_TIMEOUT,
) -> int:
    """Open the app on `script`; 0 after `q`, 2 when the script never loaded.

    `session_factory` builds the session instead of loading `script` (`modscope.inspect()`
    hands in live objects; `script` then only names where they come from). `join_timeout`
    None waits for the worker to have closed the session, every hook removed.
    """
    app = ModscopeApp(
        script,
        session_factory=session_factory,
        hooks=hooks,
        model_name=model_name,
        show_traceback=traceback,
    )
    try:
        app.run()
    finally:
        app.worker.stop()
        # A forward still running in the user's code cannot be interrupted; the thread is a
        # daemon, so the process still ends.
        app.worker.join(join_timeout)
    return app.return_code or 0
