"""The update painter and the hook actions are plain objects: canned updates painted on a bare
app that holds the panes they use, no session thread and no ModscopeApp."""

from __future__ import annotations

from textual.app import App, ComposeResult

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.tui.detail_pane import DetailPane
from modscope.tui.hook_actions import HookActions
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.log_pane import LogPane
from modscope.tui.model_view import ModelView
from modscope.tui.status_line import StatusLine
from modscope.tui.update_painter import UpdatePainter


class Panes(App[None]):
    """Only the panes the updates below reach."""

    def compose(self) -> ComposeResult:
        yield DetailPane(ModelView("canned.py"))
        yield HooksPane("canned.py")
        yield LogPane()
        yield StatusLine()


async def test_canned_updates_are_painted_on_a_bare_app():
    app = Panes()
    view = ModelView("canned.py")
    sent: list[cmd.Command] = []
    hooks = HookActions(app, view, script="canned.py", submit=sent.append)
    timings: dict[str, float] = {}
    painter = UpdatePainter(
        app, view, hooks, script="canned.py", show_traceback=False, timings=timings,
        submit=sent.append,
    )  # fmt: skip
    async with app.run_test() as pilot:
        assert painter.apply(up.Printed("hello from the script"))
        assert painter.apply(up.Notice("a note"))
        assert painter.apply(up.InternalError("a bug", "Traceback ..."))
        painter.show_status(up.SessionStatus("canned.py", loaded=True, step=3), up.Batch(queued=2))
        await pilot.pause()
        log = app.query_one(LogPane).text
        assert "hello from the script" in log and "a note" in log
        assert "a bug; ! shows the traceback" in log
        assert painter.last_internal_error == up.InternalError("a bug", "Traceback ...")
        assert "step 3" in app.query_one(StatusLine).text and view.status.queued == 2
        # Nothing loaded: no module to attach a hook to, and nothing sent to a session.
        hooks.show()
        assert hooks.target() is None and app.query_one(HooksPane).path is None
        assert not sent and not timings
