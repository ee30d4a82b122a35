"""Pilot tests: hooks from the keyboard (`h`, `x`), pause breakpoints (`c`, `s`/`n`, `q`), hook
events and the legacy hook beside the observed backward (the article's Hook Codes 1-3)."""

from __future__ import annotations

import threading
import time

from textual.widgets import Input
from textual.widgets._footer import FooterKey

from modscope.control import commands as cmd
from modscope.core.contract.hook_notes import LEGACY_BESIDE_FULL
from modscope.core.contract.hook_spec import HookAction, HookKind, HookSpec
from modscope.tui.app import ModscopeApp
from modscope.tui.confirm_screen import ConfirmScreen
from modscope.tui.detail_pane import DetailPane
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.log_pane import LogPane
from modscope.tui.module_tree import ModuleTree
from tests.helpers import EXAMPLES, hook_state
from tests.tui.tui_helpers import press, select, settle, status

SIZE = (100, 40)
HOOKS = EXAMPLES / "hooks.py"
SCRIPT_REGISTERED = EXAMPLES / "hooks_script_registered.py"

# `h` on a module, then: kind forward (one down from forward-pre), action scale (one down from
# observe), the factor 2, enter.
FORWARD_SCALE_2 = ("h", "down", "tab", "down", "tab", "2", "enter")


def footer_actions(app: ModscopeApp) -> set[str]:
    return {k.action for k in app.screen.query(FooterKey)}


async def test_h_attaches_a_forward_hook_with_keys_alone(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "logModel")
        await press(app, pilot, "h")
        assert isinstance(app.screen, HookDialog)
        assert app.screen.kind is HookKind.FORWARD_PRE and app.screen.action is HookAction.OBSERVE
        await press(app, pilot, *FORWARD_SCALE_2[1:])
        assert not isinstance(app.screen, HookDialog)
        [hook] = app.query_one(HooksPane).hooks
        assert hook.owner == "modscope" and hook.action == "logModel:forward:scale=2"
        assert "1 hook" in status(app)
        await press(app, pilot, "s")
        # Hook Code 2: doubling logModel's output turns z (the loss here) into 9.6566.
        assert "loss 9.6566" in status(app) and "out tensor 9.6566" in status(app)
        assert "logModel forward scale" in app.query_one(LogPane).text
        assert (
            "forward args (tensor 125.0000)  output (tensor 4.8283)"
            in app.query_one(DetailPane).text
        )


async def test_escape_cancels_the_hook_dialog(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "logModel")
        await press(app, pilot, "h", "down", "escape")
        assert not isinstance(app.screen, HookDialog)
        assert not make_app.session.hooks.attached
        assert app.query_one(HooksPane).hooks == ()


async def test_scale_without_a_number_is_refused_in_the_dialog(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "logModel")
        await press(app, pilot, "h", "tab", "down", "enter")
        assert isinstance(app.screen, HookDialog)
        assert "scale needs a number" in app.screen.text
        assert isinstance(app.focused, Input) and app.focused.id == "factor"
        await press(app, pilot, "1", ".", "5", "enter")
        (hook,) = make_app.session.hooks.attached.values()
        assert hook.spec.factor == 1.5


async def test_a_legacy_hook_beside_a_full_one_is_refused_not_a_crash(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "powModel")
        # backward (two down), zero (two down): a module-level full backward hook, and its cost.
        await press(app, pilot, "h", "down", "down", "tab", "down", "down")
        assert "changing a gradient needs a module-level full backward hook" in app.screen.text
        await press(app, pilot, "enter")
        assert [h.flags for h in app.query_one(HooksPane).hooks] == [("full",)]
        await press(app, pilot, "h", "up", "enter")  # legacy-backward
        assert isinstance(app.screen, HookDialog)
        assert LEGACY_BESIDE_FULL in app.screen.text
        await press(app, pilot, "escape")
        # The controller says the same when asked anyway (e.g. from a stale listing).
        app._submit(cmd.AttachHook(HookSpec("powModel", HookKind.LEGACY_BACKWARD)))
        await settle(app, pilot)
        assert "forbids a legacy backward hook" in app.query_one(LogPane).text
        assert any("forbids" in n.message for n in app._notifications)
        await press(app, pilot, "s")
        assert "step 1" in status(app)


async def test_x_detaches_and_the_module_is_as_it_was(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        model = make_app.session.model
        before = hook_state(model)
        await select(app, pilot, "powModel")
        await press(app, pilot, "h", "down", "down", "tab", "down", "tab", "3", "enter")
        assert model.powModel._backward_hooks and model.powModel._is_full_backward_hook
        await press(app, pilot, "s")
        assert hook_state(model) != before
        app.query_one(HooksPane).focus()
        await press(app, pilot, "x")
        assert hook_state(model) == before
        assert app.query_one(HooksPane).hooks == ()
        assert "detached powModel:backward:scale=3 from powModel" in app.query_one(LogPane).text


async def test_x_on_the_scripts_own_hook_asks_first(make_app):
    app = make_app(SCRIPT_REGISTERED)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "powModel")
        [hook] = app.query_one(HooksPane).hooks
        assert (hook.kind, hook.owner, hook.qualname) == ("backward", "script", "backward_hook")
        assert hook.location.endswith("hooks_script_registered.py:57")
        assert hook.flags == ("legacy",)
        await press(app, pilot, "x")
        assert isinstance(app.screen, ConfirmScreen) and "not by modscope" in app.screen.text
        await press(app, pilot, "n")
        assert make_app.session.model.powModel._backward_hooks
        await press(app, pilot, "x", "y")
        powmodel = make_app.session.model.powModel
        assert not powmodel._backward_hooks and powmodel._is_full_backward_hook is None
        assert app.query_one(HooksPane).hooks == ()
        await press(app, pilot, "s")
        assert "grad_input (1.0000, 0.0080)" not in app.query_one(LogPane).text


async def test_the_hooks_pane_follows_the_selection(make_app):
    app = make_app(SCRIPT_REGISTERED)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        pane = app.query_one(HooksPane)
        assert pane.path == "" and pane.hooks == ()
        await select(app, pilot, "powModel.powParam")
        assert pane.path == "powModel" and [h.qualname for h in pane.hooks] == ["backward_hook"]
        await select(app, pilot, "logModel")
        assert pane.path == "logModel" and pane.hooks == ()


async def test_a_pause_stops_in_powmodel_and_c_continues(make_app):
    app = make_app(hooks=["powModel:forward:pause"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "resume" not in footer_actions(app)
        await press(app, pilot, "s")
        assert "paused in powModel (forward)" in status(app)
        assert app.query_one(ModuleTree).cursor_node.data.path == "powModel"
        detail = app.query_one(DetailPane).text
        assert "paused here: forward hook, step 1, forward phase" in detail
        assert "tensor 125.0000" in detail  # what arrived: x ** q
        assert "resume" in footer_actions(app)
        await press(app, pilot, "c")
        assert "step 1" in status(app) and "paused in" not in status(app)
        assert "resume" not in footer_actions(app)
        await select(app, pilot, "powModel.powParam")
        assert "tensor 1.1034" in app.query_one(DetailPane).text


async def test_s_and_n_at_a_pause_run_to_the_end_of_the_iteration_and_the_phase(make_app):
    app = make_app(hooks=["powModel:forward:pause", "logModel:backward:pause"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        assert "paused in powModel (forward)" in status(app)
        await press(app, pilot, "n")  # the rest of the forward phase, then stop
        assert "step 0" in status(app) and "next backward" in status(app)
        assert "paused in" not in status(app)
        await press(app, pilot, "n")  # pause hooks stop the next request again
        assert "paused in logModel (backward)" in status(app)
        await press(app, pilot, "s")  # past every pause, to the end of the iteration
        assert "step 1" in status(app) and "paused in" not in status(app)
        await press(app, pilot, "s")
        assert "paused in powModel (forward)" in status(app)
        await press(app, pilot, "c")
        assert "paused in logModel (backward)" in status(app)
        await press(app, pilot, "c")
        assert "step 2" in status(app)


async def test_q_at_a_pause_quits_at_once_and_leaves_nothing_behind(make_app):
    app = make_app(hooks=["powModel:forward:pause"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        assert "paused in powModel" in status(app)
        session = make_app.session
        started = time.perf_counter()
        await pilot.press("q")
    assert app.return_code == 0
    assert app.worker.join(5)
    assert time.perf_counter() - started < 5
    assert not any(t.name == "modscope-session" for t in threading.enumerate())
    assert not session.hooks.attached and not session.model.powModel._forward_hooks
    assert not session.in_iteration and session.step == 0


async def test_the_legacy_hook_is_shown_beside_the_observed_backward(make_app):
    app = make_app(HOOKS)
    async with app.run_test(size=SIZE) as pilot:
        await select(app, pilot, "powModel")
        await press(app, pilot, "h", "up", "enter")  # legacy-backward, observe
        kinds = [h.kind for h in app.query_one(HooksPane).hooks]
        assert sorted(kinds) == ["backward", "legacy-backward"]
        await press(app, pilot, "s")
        detail = app.query_one(DetailPane).text
        # Hook Code 3: (1.0, 0.0080) against the inputs' own (0.6000, 1.6094).
        legacy = "legacy-backward grad_input (tensor 1.0000, tensor 0.0080)"
        full = "backward        grad_input (tensor 0.6000, tensor 1.6094)"
        assert legacy in detail and full in detail
        assert detail.index(legacy) < detail.index(full)
        assert "the last operation inside forward" in detail
        events = app.query_one(HookEventsPane)
        events.focus()
        events.highlighted = next(
            i
            for i, e in enumerate(events.entries)
            if not isinstance(e, str) and e.kind is HookKind.LEGACY_BACKWARD
        )
        await press(app, pilot, "enter")
        assert isinstance(app.screen, HookEventScreen)
        text = app.screen.text
        assert "[0] tensor 1.0000" in text and "[1] tensor 0.0080" in text
        assert "grad_output (1)" in text and "legacy hook:" in text
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HookEventScreen)


async def test_ten_thousand_events_in_a_step_keep_the_ui_responsive(make_app, monkeypatch):
    stalls: list[float] = []
    handler = ModscopeApp.on_modscope_app_worker_woke

    def timed(self: ModscopeApp, message: ModscopeApp.WorkerWoke) -> None:
        started = time.perf_counter()
        handler(self, message)
        stalls.append(time.perf_counter() - started)

    monkeypatch.setattr(ModscopeApp, "on_modscope_app_worker_woke", timed)
    app = make_app("ten_thousand.py", hooks=["*:forward"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        stalls.clear()
        await press(app, pilot, "n")
        events = app.query_one(HookEventsPane)
        assert events.seen == 10_001
        assert events.option_count <= 21
        assert events.entries[0].startswith("… 9,981 earlier events")
        assert len(app.view.seen) == 10_001
        assert "earlier hook events not shown" in app.query_one(LogPane).text
        # Applying the burst is one short stall of the event loop (about 0.15 s here, alone),
        # not one redraw per event.
        assert max(stalls) < 1.0
        await select(app, pilot, "5000")
        assert "forward args (tensor[1, 2]" in app.query_one(DetailPane).text
