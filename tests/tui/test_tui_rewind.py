"""Rewind in a live session: `u` goes back one iteration, `g` to any step reached; re-running
from there is bit-identical (the article's table again)."""

from __future__ import annotations

import pytest
from tui_helpers import press

from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen

SIZE = (100, 32)


def value(app, path: str) -> float:
    return app.view.summaries[path].values[0]


async def test_ten_steps_five_back_five_again(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, *"s" * 10)
        assert value(app, "powModel.powParam") == pytest.approx(1.2430, abs=5e-5)
        await press(app, pilot, *"u" * 5)
        assert "step 5" in app.query_one(StatusLine).text
        assert value(app, "powModel.powParam") == pytest.approx(1.2367, abs=5e-5)
        assert value(app, "logModel.logParam") == pytest.approx(1.9618, abs=5e-5)
        assert len(app.view.history) == 5  # the loss plot shows steps 1-5
        await press(app, pilot, *"s" * 5)
        assert value(app, "powModel.powParam") == pytest.approx(1.2430, abs=5e-5)
        assert value(app, "logModel.logParam") == pytest.approx(1.9815, abs=5e-5)
        await press(app, pilot, "g")
        assert isinstance(app.screen, StepScreen)
        await press(app, pilot, "backspace", "backspace", "1", "enter")
        assert "step 1" in app.query_one(StatusLine).text
        assert value(app, "powModel.powParam") == pytest.approx(1.1034, abs=5e-5)
        assert make_app.session.step == 1


def test_rewound_snapshot(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot) -> None:
        await press(app, pilot, *"s" * 6, "u", "u")
        assert "step 4" in app.query_one(StatusLine).text
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
