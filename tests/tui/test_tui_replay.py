"""`modscope replay`: the app paints a recording with no live model; u/g/s move through the
recorded steps, keys that need a model are greyed; a run that stopped at a break opens at the
break; a recording that cannot be read opens on the error screen that says why."""

from __future__ import annotations

import json
import shutil
from pathlib import Path

import pytest
from textual.pilot import Pilot
from textual.widgets import DataTable

from modscope.cli import main
from modscope.control import commands as cmd
from modscope.control.controller import SessionController, script_factory
from modscope.control.recording import (
    META_FILE,
    UPDATES_FILE,
    RecordingError,
    RecordingWriter,
    read_ranks,
    read_recording,
    script_meta,
)
from modscope.control.replay import replay_factory
from modscope.tui.app import ModscopeApp
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.module_tree import ModuleTree
from modscope.tui.status_line import StatusLine
from modscope.tui.step_screen import StepScreen
from tests.helpers import POWLOG, example
from tests.tui.tui_helpers import press, settle, value

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


async def test_a_missing_rank_is_named_and_the_others_keep_their_numbers(two_ranks, tmp_path):
    root = tmp_path / "R"
    shutil.copytree(Path(two_ranks) / "rank0", root / "rank0")
    shutil.copytree(Path(two_ranks) / "rank1", root / "rank2")  # no rank1
    app = ModscopeApp(str(root), controller=replay_factory(read_ranks(str(root))))
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "rank 0 of 3" in app.query_one(StatusLine).text
        assert f"{root} has no rank1" in app.query_one(LogPane).text
        await press(app, pilot, "right_square_bracket")
        assert "rank 2 of 3" in app.query_one(StatusLine).text


NAN_ORIGIN = example("nan_origin.py")


@pytest.fixture(scope="module")
def stopped_at_a_break(tmp_path_factory) -> str:
    """`run --break nan --record R` of nan_origin: steps 1 and 2, then the break in step 3's
    forward at blocks.1.gate."""
    folder = str(tmp_path_factory.mktemp("break") / "R")
    args = ["run", NAN_ORIGIN, "--steps", "5", "--break", "nan", "--json", "--record", folder]
    assert main(args) == 1
    return folder


async def test_a_replay_of_a_break_opens_at_the_break(stopped_at_a_break):
    app = replay_app(stopped_at_a_break)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        status = app.query_one(StatusLine).text
        assert "stopped at break nan at blocks.1.gate" in status and "step 2 of 2" in status
        assert "c continues" not in status
        assert app.query_one(ModuleTree).cursor_node.data.path == "blocks.1.gate"
        detail = app.query_one(DetailPane).text
        assert "break: nan tripped at step 3, forward phase" in detail
        assert "LogGate" in detail and "nan_origin.py:27" in detail
        # its inputs and outputs, as the live app shows them
        assert "inputs" in detail and "x∈[0.0000, 0.7921]" in detail
        assert "outputs" in detail and "NaN!×11" in detail
        assert app.check_action("resume", ()) is False  # nothing to continue in a recording
        await press(app, pilot, "u")
        status = app.query_one(StatusLine).text
        assert "stopped" not in status and "step 1 of 2" in status
        assert "break:" not in app.query_one(DetailPane).text
        await press(app, pilot, "s")
        assert "stopped at break nan at blocks.1.gate" in app.query_one(StatusLine).text
        assert "break: nan tripped at step 3" in app.query_one(DetailPane).text


async def test_an_unreadable_recording_opens_on_the_error_screen(tmp_path):
    folder = tmp_path / "R"
    folder.mkdir()
    (folder / META_FILE).write_text(json.dumps(script_meta(POWLOG)))
    (folder / UPDATES_FILE).write_text("[1, 2]\n")
    with pytest.raises(RecordingError) as caught:
        read_ranks(str(folder))
    message = f'not a recording: {folder}: updates.jsonl, line 1: not an {{"updates": [...]}} line'
    assert str(caught.value) == message
    app = ModscopeApp(
        str(folder), controller=replay_factory(caught.value, folder=str(folder)), animations=False
    )
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, LoadErrorScreen)
        assert message in " ".join(app.screen.text.split())
        await press(app, pilot, "q")
    assert app.return_code == 2
