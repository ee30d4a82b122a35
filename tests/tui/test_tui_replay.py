"""`modscope replay`: the app paints a recording with no live model; u/g/s move through the
recorded steps, keys that need a model are greyed."""

from __future__ import annotations

from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable
from tui_helpers import press, settle

from modscope.control import commands as cmd
from modscope.control.controller import SessionController, script_factory
from modscope.control.recording import RecordingWriter, read_ranks, read_recording, script_meta
from modscope.control.replay import replay_factory
from modscope.tui.app import ModscopeApp
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen

POWLOG = str(Path(__file__).parents[2] / "examples" / "powlog.py")
SIZE = (100, 32)


@pytest.fixture(scope="module")
def recording(tmp_path_factory) -> str:
    folder = tmp_path_factory.mktemp("rec") / "R"
    c = SessionController(script_factory(POWLOG), script=POWLOG)
    with RecordingWriter(str(folder), script_meta(POWLOG)) as writer:
        writer.write(c.load())
        for _ in range(10):
            writer.write(c.handle(cmd.Step()))
    c.close()
    return str(folder)


def replay_app(folder: str) -> ModscopeApp:
    return ModscopeApp(folder, controller=replay_factory(read_recording(folder)), animations=False)


def value(app: ModscopeApp, path: str) -> float:
    return app.view.summaries[path].values[0]


async def test_replay_opens_at_the_last_step_and_moves_through_steps(recording):
    app = replay_app(recording)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        status = app.query_one(StatusLine).text
        assert "replay" in status and "step 10 of 10" in status
        await press(app, pilot, "d")
        assert isinstance(app.screen, DiffScreen)
        table = app.screen.query_one(DataTable)
        rows = {str(table.get_row(k)[0]): [str(c) for c in table.get_row(k)] for k in table.rows}
        assert "tensor 1.2430" in rows["powModel.powParam"][2]
        assert "tensor 1.9815" in rows["logModel.logParam"][2]
        await press(app, pilot, "q", "u", "u", "u", "u", "u")
        assert "step 5 of 10" in app.query_one(StatusLine).text
        assert value(app, "powModel.powParam") == pytest.approx(1.2367, abs=5e-5)
        assert value(app, "logModel.logParam") == pytest.approx(1.9618, abs=5e-5)
        assert len(app.view.history) == 5  # the loss plot and sparklines show steps 1-5
        await press(app, pilot, "s", "s", "s", "s", "s")
        assert value(app, "powModel.powParam") == pytest.approx(1.2430, abs=5e-5)
        await press(app, pilot, "s")  # past the end: a notice, nothing else
        assert "step 10 of 10" in app.query_one(StatusLine).text
        await press(app, pilot, "g")
        assert isinstance(app.screen, StepScreen)
        await press(app, pilot, "backspace", "backspace", "2", "enter")
        assert "step 2 of 10" in app.query_one(StatusLine).text
        assert value(app, "logModel.logParam") == pytest.approx(1.7558, abs=5e-3)


async def test_keys_that_need_a_live_model_are_greyed_in_a_replay(recording):
    app = replay_app(recording)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for action in ("toggle_mode", "attach_hook", "reload"):
            assert app.check_action(action, ()) is None, action
        assert app.check_action("rewind", ()) is True


def test_replay_snapshot(snap_compare, recording):
    app = replay_app(recording)

    async def run_before(pilot: Pilot) -> None:
        await settle(app, pilot)
        await press(app, pilot, "u", "u")
        assert "step 8 of 10" in app.query_one(StatusLine).text
        app.clear_notifications()

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_the_help_says_what_a_replay_cannot_do(recording):
    app = replay_app(recording)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert "replay of a recording" in app.screen.intro
        assert "need a live model" in app.screen.intro
        greyed = {k.description for k in app.screen.keys if not k.enabled}
        assert {"Train/eval", "Hook", "Reload"} <= greyed


@pytest.fixture(scope="module")
def two_ranks(tmp_path_factory) -> str:
    """Two ranks' recordings side by side (as `run --record` writes them under torchrun): the
    second rank ran three steps with another learning rate."""
    root = tmp_path_factory.mktemp("ranks") / "R"
    for rank, lr in ((0, None), (1, 0.05)):
        c = SessionController(script_factory(POWLOG), script=POWLOG)
        with RecordingWriter(str(root / f"rank{rank}"), script_meta(POWLOG)) as writer:
            writer.write(c.load())
            if lr is not None:
                for group in c.session.optimizer.param_groups:
                    group["lr"] = lr
            for _ in range(3):
                writer.write(c.handle(cmd.Step()))
        c.close()
    return str(root)


async def test_brackets_switch_ranks_at_the_same_step(two_ranks):
    app = ModscopeApp(two_ranks, controller=replay_factory(read_ranks(two_ranks)), animations=False)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await press(app, pilot, "u")
        assert "rank 0 of 2" in app.query_one(StatusLine).text
        rank0 = value(app, "powModel.powParam")
        await press(app, pilot, "right_square_bracket")
        status = app.query_one(StatusLine).text
        assert "rank 1 of 2" in status and "step 2 of 3" in status
        assert value(app, "powModel.powParam") != rank0
        await press(app, pilot, "left_square_bracket")
        assert "rank 0 of 2" in app.query_one(StatusLine).text
        assert value(app, "powModel.powParam") == rank0
