"""Pilot tests: the panes take their colours from the app's theme (a theme change reaches them),
and the widgets' state lives in reactives (status line, loss plot, detail pane, diff view)."""

from __future__ import annotations

from textual.widget import Widget

from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.loss_plot import LossPlot
from modscope.tui.status_line import StatusLine
from tests.tui.tui_helpers import press, settle

SIZE = (100, 40)


def colour_of(widget: Widget, text: str) -> str | None:
    """The foreground colour the widget draws `text` in (the first segment holding it)."""
    for y in range(widget.size.height):
        for segment in widget.render_line(y):
            if text in segment.text and segment.style is not None and segment.style.color:
                return segment.style.color.get_truecolor().hex.upper()
    return None


async def test_a_theme_change_reaches_the_detail_pane_and_the_diff_view(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("powModel.powParam")
        await press(app, pilot, "s")
        body = app.query_one(DetailPane).query_one("#detail-body")
        assert colour_of(body, "tensor 1.1034") == app.theme_variables["text-warning"]
        await press(app, pilot, "d")
        caption = app.screen.query_one("#diff-caption")
        assert colour_of(caption, "2 changed") == app.theme_variables["text-warning"]
        dark = app.theme_variables["text-warning"]

        app.theme = "textual-light"
        await settle(app, pilot)
        light = app.theme_variables["text-warning"]
        assert light != dark
        assert colour_of(caption, "2 changed") == light
        await press(app, pilot, "escape")
        body = app.query_one(DetailPane).query_one("#detail-body")
        assert colour_of(body, "tensor 1.1034") == light


async def test_the_status_line_and_the_loss_plot_hold_what_they_show(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        line = app.query_one(StatusLine)
        assert line.status is not None and line.status.step == 2
        assert "step 2" in line.text
        plot = app.query_one(LossPlot)
        assert len(plot.losses) == 2
        plot.losses = (4.0, None, 1.0)
        await pilot.pause()
        assert "1.0000 at step 3" in str(plot.render())
        assert colour_of(plot, "×") == app.theme_variables["text-error"]


async def test_the_diff_view_hides_unchanged_keys_by_its_reactive(make_app):
    app = make_app("traps.py")  # a frozen layer and a buffer: unchanged by a step
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "d")
        diff = app.screen
        assert isinstance(diff, DiffScreen) and diff.show_unchanged
        everything = len(diff.rows())
        await press(app, pilot, "u")
        assert not diff.show_unchanged and len(diff.rows()) < everything
        assert "unchanged hidden" in str(diff.query_one("#diff-caption").render())


async def test_the_error_panel_shows_and_hides_with_its_error(make_app):
    app = make_app("raises.py")
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        panel = app.query_one(ErrorPanel)
        assert panel.error is not None and panel.has_class("-shown") and panel.display
        await press(app, pilot, "escape")
        assert panel.error is None and not panel.has_class("-shown")
