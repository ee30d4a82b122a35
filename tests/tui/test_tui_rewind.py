"""Rewind in a live session: `u` goes back one iteration, `g` to any step reached; re-running
from there is bit-identical (the article's table again); what if: a re-run with a hook compared
with the original timeline (`t` in the diff view, both in the loss plot)."""

from __future__ import annotations

import pytest
from textual.widgets._footer import FooterKey

from modscope.tui.diff_screen import DiffScreen
from modscope.tui.loss_plot import LossPlot
from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen
from tests.tui.tui_helpers import press, select, until, value

SIZE = (100, 32)


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


async def test_what_if_compares_a_rerun_with_a_hook_against_the_original(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, *"s" * 10, *"u" * 5)
        assert "what if from step 5" in app.query_one(StatusLine).text
        assert len(app.view.other_losses()) == 10
        # logModel's output doubled from step 6 on (the article's Hook Code 2), then on to 10.
        await select(app, pilot, "logModel")
        await press(app, pilot, "h", "down", "tab", "down", "tab", "2", "enter")
        await press(app, pilot, *"s" * 5)
        plot = app.query_one(LossPlot)
        assert plot.other == app.view.other_losses() and len(plot.losses) == 10
        assert plot.losses[:5] == plot.other[:5] and plot.losses[5] != plot.other[5]
        await press(app, pilot, "d")
        screen = app.screen
        assert isinstance(screen, DiffScreen) and not screen.against_original
        await press(app, pilot, "t")
        await until(pilot, lambda: screen.comparison is not None)
        c = screen.comparison.comparison
        assert c is not None and (c.step, c.fork, c.end) == (10, 5, 10)
        assert set(c.diff.changed) == {"powModel.powParam", "logModel.logParam"}
        # The original timeline's values after step 10 are the article's 1.2430 / 1.9815.
        assert c.theirs["powModel.powParam"].values[0] == pytest.approx(1.2430, abs=5e-5)
        assert c.theirs["logModel.logParam"].values[0] == pytest.approx(1.9815, abs=5e-5)
        ours = value(app, "logModel.logParam")
        assert c.ours["logModel.logParam"].values[0] == ours != pytest.approx(1.9815, abs=5e-5)
        assert c.diff.max_abs_delta["logModel.logParam"] == pytest.approx(abs(ours - 1.9815), 1e-3)
        caption = str(screen.query_one("#diff-caption").render())
        assert "this timeline vs the original (they part after step 5): 2 differ" in caption
        await press(app, pilot, "t")
        assert screen.comparison is None and "vs step 9" in str(
            screen.query_one("#diff-caption").render()
        )


async def test_t_is_hidden_before_a_rewind_and_says_why_at_the_fork(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, *"s" * 3, "d")
        assert "compare_timelines" not in {k.action for k in app.screen.query(FooterKey)}
        await press(app, pilot, "escape", "u", "d", "t")
        screen = app.screen
        await until(pilot, lambda: screen.comparison is not None)
        caption = str(screen.query_one("#diff-caption").render())
        assert "step 2 comes before the timelines part (step 2)" in caption


def test_what_if_snapshot(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot) -> None:
        await press(app, pilot, *"s" * 8, *"u" * 4)
        await select(app, pilot, "logModel")
        await press(app, pilot, "h", "down", "tab", "down", "tab", "2", "enter")
        await press(app, pilot, *"s" * 2)
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_what_if_diff_snapshot(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot) -> None:
        await press(app, pilot, *"s" * 8, *"u" * 4)
        await select(app, pilot, "logModel")
        await press(app, pilot, "h", "down", "tab", "down", "tab", "2", "enter")
        await press(app, pilot, *"s" * 2, "d", "t")
        screen = app.screen
        await until(pilot, lambda: getattr(screen, "comparison", None) is not None)
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)
