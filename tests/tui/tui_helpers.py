"""Helpers for the app's tests: an app factory on the fixed model scripts, waiting, reading."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path

from textual.pilot import Pilot

from modscope.control.controller import controller_factory
from modscope.core.session import Session, SessionOptions
from modscope.tui.app import ModscopeApp
from modscope.tui.detail_pane import DetailPane
from modscope.tui.status_line import StatusLine

SCRIPTS = Path(__file__).parent / "scripts"


class AppMaker:
    """Builds apps on the test scripts and remembers each Session they load."""

    def __init__(self) -> None:
        self.apps: list[ModscopeApp] = []
        self.sessions: list[Session] = []

    def __call__(self, script: str | Path = "powlog.py", **kwargs: object) -> ModscopeApp:
        path = str(script if Path(script).is_absolute() else SCRIPTS / script)

        def factory(sink: Callable[[str], None], pause: Callable[..., None]) -> Session:
            session = Session.load(
                path, options=SessionOptions(sink=sink, pause=pause, rewind=True)
            )
            self.sessions.append(session)
            return session

        hooks = kwargs.pop("hooks", ())
        breaks = kwargs.pop("breaks", ())
        controller = controller_factory(
            factory,
            script=path,
            hook_specs=hooks,  # type: ignore[arg-type]
            break_specs=breaks,  # type: ignore[arg-type]
        )
        app = ModscopeApp(path, controller=controller, animations=False, **kwargs)  # type: ignore[arg-type]
        self.apps.append(app)
        return app

    @property
    def session(self) -> Session:
        return self.sessions[-1]


async def settle(app: ModscopeApp, pilot: Pilot) -> None:
    """Wait until the session thread ran everything submitted and the screen shows it."""
    await app.wait_idle(timeout=30)
    await pilot.pause()


async def press(app: ModscopeApp, pilot: Pilot, *keys: str) -> None:
    """Press keys one at a time, letting the session thread finish before and after each."""
    await settle(app, pilot)
    for key in keys:
        await pilot.press(key)
        await settle(app, pilot)


async def until(pilot: Pilot, condition: Callable[[], bool], *, tries: int = 500) -> None:
    """Let the app run until `condition()` holds (a bounded number of event-loop turns)."""
    for _ in range(tries):
        if condition():
            return
        await pilot.pause(0.01)
    raise AssertionError("the app never reached the expected state")


async def select(app: ModscopeApp, pilot: Pilot, path: str) -> None:
    """Move the tree's cursor to `path` and let the app show it."""
    app.go_to(path)
    # The tree reports the new cursor in a message: only once the app has handled it are the
    # node's hooks asked for, and so waited for by `settle`.
    detail = app.query_one(DetailPane)
    await until(pilot, lambda: detail.ref is not None and detail.ref.path == path)
    await settle(app, pilot)


def status(app: ModscopeApp) -> str:
    """The status line's text."""
    return app.query_one(StatusLine).text


def value(app: ModscopeApp, path: str) -> float:
    """The first value of the summary the app shows for `path`."""
    return app.view.summaries[path].values[0]
