"""User code cannot take the app down: sys.exit() or KeyboardInterrupt raised inside a forward is
shown as a located error, the session goes on, and nothing says "running" forever."""

from __future__ import annotations

from modscope.tui.error_panel import ErrorPanel
from modscope.tui.status_line import StatusLine
from tests.tui.tui_helpers import press

SIZE = (100, 32)


async def test_sys_exit_and_keyboard_interrupt_in_forward_are_user_errors(make_app):
    app = make_app("exits.py")
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        panel = app.query_one(ErrorPanel)
        assert "sys.exit(3) was called" in panel.text
        assert "exits.py, line 20" in panel.text and "step 2, forward" in panel.text
        await press(app, pilot, "s")
        assert "KeyboardInterrupt was raised by the code" in panel.text
        status = app.query_one(StatusLine).text
        assert "step 1" in status and "idle" in status and "running" not in status
        await press(app, pilot, "s")
        assert "step 2" in app.query_one(StatusLine).text
        assert app.worker.join(0.01) is False  # the session thread is still there
