"""`modscope.inspect()`: the app on live objects from inside a running program, like
`breakpoint()`; where no app can run, the headless tree and findings instead.

Only the path that opens the app imports textual; the fallback renders with rich, as
`modscope tree` and `modscope check` do.
"""

from __future__ import annotations

import asyncio
import sys
import threading
from collections.abc import Callable, Sequence
from typing import Any, TextIO

NO_APP_PREFIX = "modscope.inspect"


def why_no_app() -> str | None:
    """Why the app cannot run here, in a few words, or None when it can."""
    if threading.current_thread() is not threading.main_thread():
        # Textual installs signal handlers and drives the terminal from the main thread only.
        return "not on the main thread, where the app cannot take the terminal"
    try:
        asyncio.get_running_loop()
    except RuntimeError:
        pass
    else:
        # App.run() starts its own event loop, which asyncio refuses inside a running one.
        return "inside a running asyncio event loop (a notebook?), where the app cannot start"
    return why_no_terminal()


def why_no_terminal() -> str | None:
    """Which of stdin and stdout is not a terminal (cron, CI, a pipe, `> log`), or None."""
    for name, stream in (("stdin", sys.stdin), ("stdout", sys.stdout)):
        try:
            tty = stream is not None and stream.isatty()
        except (AttributeError, ValueError):  # replaced or closed streams
            tty = False
        if not tty:
            return f"{name} is not a terminal"
    return None


def inspect_objects(
    model: Any,
    *,
    origin: tuple[str, int],
    hooks: Sequence[str] = (),
    **objects: Any,
) -> None:
    """Open the app on `model` and the script-contract `objects` (inputs, loss_fn, ...) and
    return when the user quits; print the tree and findings when no app can run here.

    `origin` is the caller's (file, line). Every hook modscope adds is removed before this
    returns; hooks it did not add stay unless the user detached one explicitly.
    """
    from torch import nn

    if not isinstance(model, nn.Module):
        raise TypeError(f"modscope.inspect: model is a {type(model).__name__}, not an nn.Module")
    reason = why_no_app()
    if reason is not None:
        print(f"{NO_APP_PREFIX}: {reason}; printing the tree and findings instead", file=sys.stderr)
        print_headless(model, objects.get("optimizer"))
        return None
    from modscope.launch import make_app, run_app

    file, line = origin
    factory = session_factory(model, file, objects)
    run_app(make_app(f"{file}:{line}", hooks=hooks, session_factory=factory), join_timeout=None)
    return None


def session_factory(model: Any, file: str, objects: dict[str, Any]) -> Callable[..., Any]:
    """The app's session factory for live objects (called again by `r`, on the same objects)."""
    from modscope.core.session import Session, SessionOptions

    def build(sink: Callable[[str], None], pause: Callable[..., None]) -> Session:
        options = SessionOptions(sink=sink, pause=pause, rewind=True)
        return Session.from_objects(model, origin=file, options=options, **objects)

    return build


def print_headless(model: Any, optimizer: Any = None, stream: TextIO | None = None) -> None:
    """The module tree, its totals and the static findings, as `modscope tree` and
    `modscope check` print them."""
    from rich.console import Console

    from modscope.core.doctor import static_findings
    from modscope.core.model.inventory import build_inventory
    from modscope.report.check_command import findings_report
    from modscope.report.tree_command import build_tree, totals_line

    inv = build_inventory(model)
    console = Console(file=stream or sys.stdout, highlight=False)
    console.print(build_tree(inv, name="model"))
    console.print(totals_line(inv))
    console.print()
    console.print(
        findings_report(
            static_findings(model, optimizer, inventory=inv),
            title="findings (static: no step was run)",
        )
    )
