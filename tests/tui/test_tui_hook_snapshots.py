"""SVG snapshots of hooks in the app: the hook dialog, the hooks pane listing the script's own
hook, hook events in the log, and an iteration held by a pause hook.

Each test asserts that the app is alive and shows a known label before the screenshot (a
crashed app saves a blank SVG that would pass). The doctor is off, as in
`test_tui_snapshots.py`, so the pictures pin the app's look rather than the doctor's wording.
Regenerate with `pytest tests/tui --snapshot-update -k hook`, then open the SVGs and look.
"""

from __future__ import annotations

from textual.pilot import Pilot

from modscope.tui.app import ModscopeApp
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.log_pane import LogPane
from modscope.tui.status_line import StatusLine
from tests.helpers import EXAMPLES
from tests.tui.tui_helpers import press, settle

SIZE = (100, 32)


async def ready(app: ModscopeApp, pilot: Pilot, *keys: str, select: str | None = None) -> None:
    """Load, select a module, press `keys`, wait for the session thread, and drop toasts."""
    await settle(app, pilot)
    if select is not None:
        app.go_to(select)
    await press(app, pilot, *keys)
    app.clear_notifications()
    await pilot.pause()
    assert "internal error" not in app.query_one(LogPane).text


def test_hook_dialog(snap_compare, make_app):
    app = make_app(EXAMPLES / "hooks.py")

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "h", "down", "down", "tab", "down", "tab", "2", select="logModel")
        assert isinstance(app.screen, HookDialog)
        assert "logModel:backward:scale=2" in app.screen.text
        assert "changing a gradient needs a module-level full backward hook" in app.screen.text

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_hooks_pane_lists_the_scripts_hook(snap_compare, make_app):
    app = make_app(EXAMPLES / "hooks_script_registered.py")

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, select="powModel")
        pane = app.query_one(HooksPane)
        pane.focus()
        await pilot.pause()
        assert [(h.owner, h.qualname) for h in pane.hooks] == [("script", "backward_hook")]

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_hook_events_in_the_log(snap_compare, make_app):
    app = make_app(
        EXAMPLES / "hooks.py",
        hooks=["logModel:forward-pre:scale=2", "powModel:legacy-backward"],
    )

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s", select="powModel")
        assert "loss 5.5215" in app.query_one(StatusLine).text  # Hook Code 1
        assert "logModel forward-pre scale" in app.query_one(LogPane).text
        assert app.query_one(HookEventsPane).seen == 3

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_paused_iteration(snap_compare, make_app):
    app = make_app(hooks=["powModel:forward:pause"])

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s")
        assert "paused in powModel (forward)" in app.query_one(StatusLine).text
        assert app.view.status.paused_at

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_paused_iteration_narrow(snap_compare, make_app):
    app = make_app(hooks=["powModel:forward:pause"])

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s")
        assert "paused in powModel" in app.query_one(StatusLine).text

    assert snap_compare(app, terminal_size=(60, 20), run_before=run_before)
