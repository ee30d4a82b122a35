"""The app under stress: any terminal size down to 1x1 and back, pastes of any length, Ctrl-C
idle and mid-step, and `q` during a forward that will not end soon."""

from __future__ import annotations

import pytest
from tui_helpers import press, settle

from modscope.tui.break_dialog import BreakDialog
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen

SIZE = (100, 40)
TINY_SIZES = [(20, 8), (1, 1), (2, 30), (40, 2)]


def status(app) -> str:
    return app.query_one(StatusLine).text


async def shrink_and_grow(app, pilot) -> None:
    """Resize through tiny terminals and back, the app alive after each."""
    for size in [*TINY_SIZES, SIZE]:
        await pilot.resize_terminal(*size)
        await pilot.pause()
        assert app.is_running, f"the app ended at {size[0]}x{size[1]}"


@pytest.mark.parametrize(
    ("keys", "screen"),
    [
        ((), None),
        (("question_mark",), HelpScreen),
        (("down", "h"), HookDialog),
        (("b",), BreakDialog),
        (("d",), DiffScreen),
        (("l",), LayersScreen),
        (("g",), StepScreen),
        (("slash",), None),
    ],
)
async def test_every_screen_survives_any_size_and_still_answers_keys(make_app, keys, screen):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", *keys)
        if screen is not None:
            assert isinstance(app.screen, screen)
        await shrink_and_grow(app, pilot)
        await press(app, pilot, "escape")
        assert app.screen is app.screen_stack[0]
        await press(app, pilot, "escape", "s")
        assert app.is_running and "step 2" in status(app)


async def test_the_app_starts_in_a_tiny_terminal_and_grows(make_app):
    app = make_app()
    async with app.run_test(size=(20, 8)) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "s")
        await pilot.resize_terminal(*SIZE)
        await settle(app, pilot)
        assert app.is_running and "step 1" in status(app)
