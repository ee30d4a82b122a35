"""Break conditions in the app: the iteration stops where a NaN starts, the tree selects the
module, the detail pane shows the values; `b` arms and disarms conditions."""

from __future__ import annotations

from textual.widgets import Input, OptionList

from modscope.tui.break_dialog import BreakDialog
from modscope.tui.detail_pane import DetailPane
from modscope.tui.module_tree import ModuleTree
from modscope.tui.status_line import StatusLine
from tests.helpers import EXAMPLES
from tests.tui.tui_helpers import press, settle, until

NAN_ORIGIN = EXAMPLES / "nan_origin.py"
SIZE = (110, 34)


async def test_a_nan_stops_the_iteration_at_its_origin(make_app):
    app = make_app(NAN_ORIGIN, breaks=["nan"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        assert "break nan" in app.query_one(StatusLine).text  # armed, shown
        await press(app, pilot, "s")  # step 3: log() of a negative value in blocks.1.gate
        status = app.query_one(StatusLine).text
        assert "paused in break nan at blocks.1.gate" in status
        assert app.query_one(ModuleTree).cursor_node.data.path == "blocks.1.gate"
        detail = app.query_one(DetailPane).text
        assert "break: nan tripped at step 3, forward phase" in detail
        assert "LogGate" in detail and "nan_origin.py:" in detail and "NaN!" in detail
        await press(app, pilot, "s")  # s finishes the iteration, past the break
        status = app.query_one(StatusLine).text
        assert "paused" not in status and "step 3" in status


async def test_b_arms_and_disarms_conditions(make_app):
    app = make_app(NAN_ORIGIN)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "b")
        assert isinstance(app.screen, BreakDialog)
        assert "none armed" in app.screen.text
        await press(app, pilot, *"loss<", "enter")  # incomplete: refused with the grammar
        assert "loss<" in app.screen.query_one(Input).value
        assert app.screen.conditions == []
        await press(app, pilot, "1", "0", "0", "enter", *"step=2", "enter")
        assert app.screen.conditions == ["loss<100", "step=2"]
        app.screen.query_one(OptionList).focus()
        await press(app, pilot, "x", "escape")  # the highlighted (first) one removed
        assert not isinstance(app.screen, BreakDialog)
        await settle(app, pilot)
        assert app.view.status.breaks == ("step=2",)
        assert make_app.session.armed and str(make_app.session.armed[0]) == "step=2"
        await press(app, pilot, "s", "s")
        assert "paused in break step=2" in app.query_one(StatusLine).text
        await press(app, pilot, "c")
        assert "step 2" in app.query_one(StatusLine).text


def test_break_snapshot(snap_compare, make_app):
    app = make_app(NAN_ORIGIN, breaks=["nan"])

    async def run_before(pilot) -> None:
        await press(app, pilot, "s", "s", "s")
        assert "paused in break nan at blocks.1.gate" in app.query_one(StatusLine).text
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_u_at_a_break_goes_back_before_it_and_a_fix_is_tried(make_app):
    app = make_app(NAN_ORIGIN, breaks=["nan"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, *"sss")
        assert "paused in break nan at blocks.1.gate" in app.query_one(StatusLine).text
        broken_mean = app.view.summaries["blocks.1.gate.offset"].mean
        await press(app, pilot, "u")  # drops the broken iteration: the state after step 2
        status = app.query_one(StatusLine).text
        assert "paused" not in status and "step 2" in status
        assert make_app.session.step == 2 and not make_app.session.partial
        assert app.view.summaries["blocks.1.gate.offset"].mean == broken_mean
        await press(app, pilot, "s")  # the same step again: the same break
        assert "paused in break nan at blocks.1.gate" in app.query_one(StatusLine).text
        # What if the offset learned slower? Back to step 1, the gradient reaching the gate
        # scaled by 0.1 (a backward-pre hook), then on: no NaN.
        await press(app, pilot, "u", "u")
        assert "step 1" in app.query_one(StatusLine).text
        app.go_to("blocks.1.gate")
        await settle(app, pilot)
        await press(app, pilot, "h", *["down"] * 3, "tab", "down", "tab", "0", ".", "1", "enter")
        [hook] = make_app.session.hooks.attached.values()
        assert str(hook.spec) == "blocks.1.gate:backward-pre:scale=0.1"
        await press(app, pilot, *"ssss")
        status = app.query_one(StatusLine).text
        assert "paused" not in status and "step 5" in status and "loss 0.6894" in status
        assert "what if from step 1" in status
        # Step 2 in both timelines: the offset's bad update is gone here.
        await press(app, pilot, "g", "backspace", "backspace", "2", "enter", "d", "t")
        screen = app.screen
        await until(pilot, lambda: getattr(screen, "comparison", None) is not None)
        c = screen.comparison.comparison
        assert (c.step, c.fork, c.end) == (2, 1, 2) and len(c.diff.changed) == 5
        assert set(c.diff.unchanged) == {
            "blocks.2.linear.weight",
            "blocks.2.linear.bias",
            "head.weight",
            "head.bias",
        }
        assert round(c.theirs["blocks.1.gate.offset"].min, 4) == -0.3659
        assert round(c.ours["blocks.1.gate.offset"].min, 4) == 0.2891
        assert round(c.diff.max_abs_delta["blocks.1.gate.offset"], 4) == 0.6550
