"""The app under stress: any terminal size down to 1x1 and back, pastes of any length, Ctrl-C
idle and mid-step, and `q` during a forward that will not end soon."""

from __future__ import annotations

import time

import pytest
from textual import events
from textual.command import CommandInput
from textual.widgets import Input

from modscope import launch
from modscope.core.contract.steps import Phase
from modscope.tui.app import ModscopeApp
from modscope.tui.bounded_input import NUMBER_LENGTH, TEXT_LENGTH
from modscope.tui.break_dialog import BreakDialog
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.module_tree import ModuleTree
from modscope.tui.quit_screen import QuitScreen
from modscope.tui.step_screen import StepScreen
from tests.tui.tui_helpers import press, settle, status, until

SIZE = (100, 40)
TINY_SIZES = [(20, 8), (1, 1), (2, 30), (40, 2)]


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
        (("ctrl+c",), QuitScreen),
    ],
    ids=["main", "help", "hook", "breaks", "diff", "layers", "step", "filter", "quit"],
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


# -- pastes of any length -------------------------------------------------------------------

HOSTILE_LINE = "[bold]x[/b]\x1b[31m" + "abc def " * 13_200  # 100 kB, markup and an escape
SHOWN_START = "[bold]x[/b]\\x1b[31mabc def"


async def paste(app, pilot, text: str) -> float:
    """Paste `text` into the focused field; the seconds until the app has handled it and
    answers a key again."""
    field = app.focused
    assert isinstance(field, Input)
    started = time.perf_counter()
    field.post_message(events.Paste(text))
    await pilot.pause()
    await pilot.press("home")
    await settle(app, pilot)
    return time.perf_counter() - started


async def test_a_100_kb_paste_into_the_filter_is_cut_and_shown_as_typed(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "slash")
        seconds = await paste(app, pilot, HOSTILE_LINE + "\nsecond line")
        field = app.query_one("#filter", Input)
        assert seconds < 1.0
        assert len(field.value) == TEXT_LENGTH
        assert field.value.startswith(SHOWN_START)
        assert "\x1b" not in field.value
        assert SHOWN_START in field.render_line(0).text  # the markup is not interpreted
        assert list(app.query_one(ModuleTree).root.children) == []  # nothing is called that
        await press(app, pilot, "escape")
        assert [str(n.label).split()[0] for n in app.query_one(ModuleTree).root.children] == [
            "powModel",
            "logModel",
        ]


@pytest.mark.parametrize(
    ("keys", "field_id", "pasted", "kept"),
    [
        (("b",), "#condition", HOSTILE_LINE, TEXT_LENGTH),
        (("down", "h", "tab", "down", "tab"), "#factor", "2" * 100_000, NUMBER_LENGTH),
        (("g",), "#step", "1" * 100_000, NUMBER_LENGTH),
    ],
    ids=["break-condition", "hook-factor", "step"],
)
async def test_a_100_kb_paste_into_a_dialog_field_is_cut_to_its_length(
    make_app, keys, field_id, pasted, kept
):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", *keys)
        field = app.screen.query_one(field_id, Input)
        assert app.focused is field
        field.select_all()
        seconds = await paste(app, pilot, pasted)
        assert seconds < 1.0
        assert len(field.value) == kept
        assert field.value[:5] == pasted[:5].replace("\x1b", "\\x1b")[:5]
        assert any("the paste was cut" in str(n.message) for n in app._notifications)


async def test_a_paste_that_fits_goes_in_whole_at_the_cursor(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "slash", "l", "o")
        await paste(app, pilot, "gModel\tx\r\nignored")
        assert app.query_one("#filter", Input).value == "logModel\\tx"
        assert not list(app._notifications)


async def test_the_command_palette_refuses_a_100_kb_paste(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "ctrl+p")
        await until(pilot, lambda: isinstance(app.focused, CommandInput))
        seconds = await paste(app, pilot, HOSTILE_LINE)
        assert seconds < 1.0
        assert app.focused.value == ""
        await pilot.press("p", "o", "w")
        assert app.focused.value == "pow"


# -- Ctrl-C -----------------------------------------------------------------------------------


async def start_a_held_step(app, pilot, make_app, *keys: str):
    """Press `keys` on slow.py (whose forward waits for its gate) until a step is under way;
    returns the gate."""
    await settle(app, pilot)
    await pilot.press(*keys)
    await until(pilot, lambda: app.view.status.busy)
    return make_app.session.script.module.gate


async def test_ctrl_c_during_a_step_pauses_it_before_the_next_phase_and_c_goes_on(make_app):
    app = make_app("slow.py")
    async with app.run_test(size=SIZE) as pilot:
        gate = await start_a_held_step(app, pilot, make_app, "s", "s")
        await until(pilot, lambda: app.view.status.queued == 1)
        await pilot.press("ctrl+c")
        gate.release()
        await until(pilot, lambda: bool(app.view.status.paused_at))
        await settle(app, pilot)
        session = make_app.session
        assert (session.step, session.in_iteration, session.next_phase) == (0, True, Phase.BACKWARD)
        assert "paused in step 1 before backward (Ctrl-C) · c continues" in status(app)
        assert "queued" not in status(app)  # the second `s` was dropped
        said = [str(n.message) for n in app._notifications]
        assert (
            "Ctrl-C: the step under way stops at its next phase boundary; 1 queued command "
            "dropped" in said
        )
        assert not isinstance(app.screen, QuitScreen)
        await press(app, pilot, "c")
        assert session.step == 1 and not session.in_iteration
        assert session.model.weight.item() == pytest.approx(0.8)  # 1 - 0.1 * d(2w)/dw
        assert "step 1" in status(app) and "idle" in status(app)


async def test_ctrl_c_then_u_undoes_the_interrupted_step(make_app):
    app = make_app("slow.py")
    async with app.run_test(size=SIZE) as pilot:
        gate = await start_a_held_step(app, pilot, make_app, "space")
        await pilot.press("ctrl+c")
        gate.release()
        await until(pilot, lambda: bool(app.view.status.paused_at))
        assert not app.worker.running  # the continuous run stopped too
        await press(app, pilot, "u")
        session = make_app.session
        assert (session.step, session.in_iteration, session.partial) == (0, False, False)
        assert session.model.weight.item() == 1.0 and session.model.weight.grad is None
        assert "step 0" in status(app) and "paused" not in status(app)


async def test_ctrl_c_while_the_script_loads_drops_the_steps_queued_behind_it(
    make_app, monkeypatch, tmp_path
):
    go = tmp_path / "go"
    monkeypatch.setenv("MODSCOPE_TEST_GO", str(go))
    app = make_app("slow_load.py")
    async with app.run_test(size=SIZE) as pilot:
        await pilot.press("s", "s")
        await until(pilot, lambda: app.view.status.queued == 2)
        await pilot.press("ctrl+c")
        await until(pilot, lambda: app.view.status.queued == 0)
        assert not isinstance(app.screen, QuitScreen)
        said = [str(n.message) for n in app._notifications]
        assert "Ctrl-C: 2 queued commands dropped" in said
        go.touch()
        await settle(app, pilot)
        assert "step 0" in status(app) and "idle" in status(app)


async def test_ctrl_c_when_idle_asks_to_quit_and_a_second_one_quits(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "ctrl+c")
        assert isinstance(app.screen, QuitScreen)
        await press(app, pilot, "n")
        assert app.is_running and app.screen is app.screen_stack[0]
        await press(app, pilot, "s", "ctrl+c")
        assert isinstance(app.screen, QuitScreen)
        await pilot.press("ctrl+c")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running


async def test_ctrl_c_is_in_the_help(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        rows = {k.key: k.description for k in app.screen.keys}
        assert rows["^c"] == "Interrupt a step (idle: ask to quit)"


async def test_ctrl_c_with_text_selected_in_a_field_copies_it(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "slash", "l", "o", "g", "shift+left", "shift+left")
        await press(app, pilot, "ctrl+c")
        assert app.clipboard == "og"
        assert not isinstance(app.screen, QuitScreen)


# -- q during a forward that runs on ------------------------------------------------------------


def test_q_during_a_long_forward_ends_the_app_at_once(make_app, monkeypatch):
    app = make_app("slow.py")
    pressed: list[float] = []
    ended: list[tuple[int, float]] = []

    async def user(pilot):
        await start_a_held_step(app, pilot, make_app, "s")
        pressed.append(time.perf_counter())
        await pilot.press("q")

    def headless_run():
        ModscopeApp.run(app, headless=True, size=SIZE, auto_pilot=user)

    monkeypatch.setattr(app, "run", headless_run)
    # The forward (held up to 30 s) cannot be interrupted: the process ends without it.
    monkeypatch.setattr(launch.os, "_exit", lambda code: ended.append((code, time.perf_counter())))
    launch.run_app(app)
    seconds = ended[0][1] - pressed[0]
    print(f"\nq during a forward: the app ended {seconds:.3f} s after q")
    make_app.session.script.module.gate.release()
    assert ended[0][0] == 0
    assert seconds < 2.0


async def test_keys_typed_right_after_q_do_not_crash_the_quit(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "down")
        for key in ("q", "h", "b", "g", "question_mark"):  # typed ahead, as in a terminal
            app.post_message(events.Key(key, key))
        await pilot.pause()
    assert app.return_code == 0 and app._exception is None


async def test_q_in_the_quit_question_quits_and_escape_stays(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "ctrl+c")
        assert "y / q / ctrl+c: quit" in str(app.screen.query_one("Vertical").border_subtitle)
        await press(app, pilot, "escape")
        assert app.is_running and app.screen is app.screen_stack[0]
        await press(app, pilot, "ctrl+c")
        await pilot.press("q")
        await pilot.pause()
    assert app.return_code == 0 and not app.is_running
