"""Pilot tests: `q` closes every modal view (as in `less`), `escape` still does, and the footer
says so; on the main screen and the load-error screen `q` still quits."""

from __future__ import annotations

from rich.text import Text
from textual.widgets import Footer, Input

from modscope.core.contract.hook_spec import HookKind
from modscope.tui.app import ModscopeApp
from modscope.tui.confirm_screen import ConfirmScreen
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.values_screen import ValuesScreen
from tests.tui.tui_helpers import press, settle

SIZE = (100, 40)


def footer_keys(app: ModscopeApp) -> list[tuple[str, str]]:
    """(key, description) of each key the footer of the current screen shows."""
    footer = app.screen.query_one(Footer)
    return [(k.key, k.description) for k in footer.query("FooterKey")]  # type: ignore[attr-defined]


def closes_with(app: ModscopeApp, key: str) -> bool:
    binding = app.screen.active_bindings.get(key)
    return binding is not None and binding.enabled and binding.binding.description == "Close"


async def test_q_closes_the_diff_view_and_the_footer_says_so(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "d")
        assert isinstance(app.screen, DiffScreen)
        assert ("q", "Close") in footer_keys(app)
        await press(app, pilot, "q")
        assert not isinstance(app.screen, DiffScreen)
        assert app.is_running and app.return_code is None
        await press(app, pilot, "d", "escape")
        assert not isinstance(app.screen, DiffScreen)


async def test_q_closes_the_values_view(make_app):
    app = make_app("wide.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("0.weight")
        await press(app, pilot, "enter")
        assert isinstance(app.screen, ValuesScreen)
        assert ("q", "Close") in footer_keys(app)
        await press(app, pilot, "q")
        assert not isinstance(app.screen, ValuesScreen)
        assert app.is_running


async def test_q_closes_the_help(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen) and closes_with(app, "q")
        await press(app, pilot, "q")
        assert not isinstance(app.screen, HelpScreen)
        await press(app, pilot, "question_mark", "escape")
        assert not isinstance(app.screen, HelpScreen)
        assert app.is_running


async def test_q_closes_a_hook_event(make_app):
    app = make_app(hooks=["logModel:forward"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        events = app.query_one(HookEventsPane)
        events.focus()
        await press(app, pilot, "enter")
        assert isinstance(app.screen, HookEventScreen) and closes_with(app, "q")
        await press(app, pilot, "q")
        assert not isinstance(app.screen, HookEventScreen)
        assert app.is_running


async def test_q_cancels_the_hook_dialog_but_types_in_its_factor_field(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("logModel")
        await press(app, pilot, "h")
        assert isinstance(app.screen, HookDialog) and closes_with(app, "q")
        await press(app, pilot, "q")
        assert not isinstance(app.screen, HookDialog)
        assert app.is_running and not app.view.hooks.get("logModel")
        # action: scale (one down), then the factor field: there `q` is a key like any other.
        await press(app, pilot, "h", "tab", "down", "tab")
        dialog = app.screen
        assert isinstance(dialog, HookDialog) and isinstance(app.focused, Input)
        assert "q" not in app.screen.active_bindings
        await press(app, pilot, "q", "2")
        assert app.screen is dialog and dialog.query_one("#factor", Input).value == "2"
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HookDialog)


async def test_the_hook_dialog_arrows_choose_and_wrap_around(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("logModel")
        await press(app, pilot, "h")
        dialog = app.screen
        assert isinstance(dialog, HookDialog) and dialog.kind is HookKind.FORWARD_PRE
        await press(app, pilot, "down")
        assert dialog.kind is HookKind.FORWARD
        await press(app, pilot, "up", "up")
        assert dialog.kind is list(HookKind)[-1]
        await press(app, pilot, "down")
        assert dialog.kind is HookKind.FORWARD_PRE
        assert "forward-pre" in dialog.text
        await press(app, pilot, "escape")


async def test_q_answers_no_to_a_question(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        answers: list[bool | None] = []
        app.push_screen(ConfirmScreen("Detach?", Text("A question.")), answers.append)
        await settle(app, pilot)
        assert isinstance(app.screen, ConfirmScreen) and closes_with(app, "q")
        await press(app, pilot, "q")
        assert answers == [False] and not isinstance(app.screen, ConfirmScreen)
        assert app.is_running


async def test_q_on_the_main_screen_still_quits(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("q")
    assert app.return_code == 0


async def test_every_dialog_sits_in_the_middle_and_escape_answers_its_way_out():
    from textual.app import App
    from textual.containers import Vertical

    from modscope.control.updates import InternalError
    from modscope.tui.break_dialog import BreakDialog
    from modscope.tui.modal import CentredModal
    from modscope.tui.quit_screen import QuitScreen
    from modscope.tui.step_screen import StepScreen
    from modscope.tui.traceback_screen import TracebackScreen

    cases: list[tuple[CentredModal, object]] = [
        (ConfirmScreen("Detach?", Text("a hook")), False),
        (QuitScreen(), False),
        (StepScreen(3, 10), None),
        (BreakDialog(("nan",)), None),  # nothing changed
        (HookDialog("fc", "fc"), None),
        (TracebackScreen(InternalError("a bug", "Traceback ...")), None),
        (HelpScreen("Log", "What was printed.", []), None),
    ]
    app: App[None] = App()
    async with app.run_test(size=(100, 30)) as pilot:
        for screen, answer in cases:
            answers: list[object] = []
            app.push_screen(screen, answers.append)
            await pilot.pause()
            box = screen.query_one(Vertical)
            centre = box.region.center
            assert abs(centre[0] - 50) <= 1 and abs(centre[1] - 15) <= 1, type(screen)
            assert app.focused is not None
            await pilot.press("escape")
            await pilot.pause()
            assert answers == [answer], type(screen)
            assert app.screen is not screen
