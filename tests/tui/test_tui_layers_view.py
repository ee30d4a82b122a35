"""The layers view (`l`): a table of modules with their statistics after the last step, sorted
by any column, filtered like the tree, `enter` to the module in the tree; greyed in a replay."""

from __future__ import annotations

from textual.pilot import Pilot
from textual.widgets import DataTable

from modscope.cli import main
from modscope.control import commands as cmd
from modscope.control.controller import SessionController, script_factory
from modscope.control.recording import RecordingWriter, read_recording, script_meta
from modscope.control.replay import replay_factory
from modscope.core.contract.layer_types import LayerStep
from modscope.tui.app import ModscopeApp
from modscope.tui.help_screen import HelpScreen
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.model_view import ModelView
from modscope.tui.module_tree import ModuleTree
from modscope.tui.table_screen import tail_cell
from tests.helpers import EXAMPLES
from tests.tui.tui_helpers import press

HEALTH = EXAMPLES / "layer_health.py"
SIZE = (120, 30)


def table_rows(app: ModscopeApp) -> dict[str, list[str]]:
    table = app.screen.query_one(DataTable)
    return {str(k.value): [str(c) for c in table.get_row(k)] for k in table.rows}


def first_column(app: ModscopeApp) -> list[str]:
    table = app.screen.query_one(DataTable)
    return [str(table.get_row_at(i)[0]) for i in range(table.row_count)]


async def opened_after_two_steps(app: ModscopeApp, pilot: Pilot, *keys: str) -> None:
    """`l` (collecting starts), back, two steps, `l` again, then `keys`."""
    await press(app, pilot, "l", "escape", "s", "s", "l", *keys)
    app.clear_notifications()
    await pilot.pause()
    assert isinstance(app.screen, LayersScreen)
    assert "internal error" not in app.query_one(LogPane).text


def test_layers_view_after_two_steps(snap_compare, make_app):
    app = make_app(HEALTH)

    async def run_before(pilot: Pilot) -> None:
        await opened_after_two_steps(app, pilot)
        rows = table_rows(app)
        assert list(rows) == ["", "hidden", "act", "gate_in", "gate", "out"]
        header = [c.label.plain for c in app.screen.query_one(DataTable).columns.values()]
        dead, saturated = header.index("dead"), header.index("saturated")
        assert rows["act"][dead] == "100%" and rows["gate"][saturated] == "85%"
        assert "after step 2" in str(app.screen.query_one("#layers-caption").render())

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_at_120_columns_every_number_is_on_screen_whatever_the_module_names(make_app):
    app = make_app(HEALTH.parent / "tiny_lm.py")  # encoder.layers.0.self_attn.out_proj
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "l", "escape", "s", "l")
        table = app.screen.query_one(DataTable)
        header = [c.label.plain for c in table.columns.values()]
        last = header.index("update ratio")
        widths = [c.get_render_width(table) for c in table.columns.values()]
        assert sum(widths[: last + 1]) <= table.scrollable_content_region.width
        # A path cut to fit keeps its end, which says which module it is.
        modules = [str(table.get_row_at(i)[0]) for i in range(table.row_count)]
        cut = [m for m in modules if m.startswith("…")]
        assert cut and any(m.endswith("0.self_attn.out_proj") for m in cut)


def test_a_cut_module_path_keeps_its_end_in_terminal_cells():
    # Wide characters take two cells each: a path cut to `width` counts cells, not characters.
    wide = "编码器.层.0.注意力"
    for width in range(1, 16):
        text = tail_cell(wide, width, "bold")
        assert text.cell_len == max(1, width)
        assert text.plain.startswith("…") and text.plain.endswith("力" if width >= 3 else "")
    assert tail_cell(wide, 19, "").plain == wide  # 19 cells: it fits


def test_layers_view_sorted_by_dead_share(snap_compare, make_app):
    app = make_app(HEALTH)

    async def run_before(pilot: Pilot) -> None:
        # o: type, mean, std, absmax, dead (largest first).
        await opened_after_two_steps(app, pilot, "o", "o", "o", "o", "o")
        assert app.screen.sort_key == "dead" and app.screen.descending
        assert first_column(app)[0] == "act"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


async def test_o_cycles_the_sort_column_and_shift_o_reverses(make_app):
    app = make_app(HEALTH)
    async with app.run_test(size=SIZE) as pilot:
        await opened_after_two_steps(app, pilot, "o")
        assert app.screen.sort_key == "type"
        # GatedMLP, the Linears in the model's order, ReLU, Sigmoid.
        assert first_column(app) == ["(root)", "hidden", "gate_in", "out", "act", "gate"]
        await press(app, pilot, "O")
        assert first_column(app)[:2] == ["gate", "act"]
        for _ in range(8):  # on through every column, back to the model's order
            await press(app, pilot, "o")
        assert app.screen.sort_key == "module"
        assert first_column(app) == ["(root)", "hidden", "act", "gate_in", "gate", "out"]


async def test_the_tree_filter_applies_and_enter_selects_the_module_in_the_tree(make_app):
    app = make_app(HEALTH)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "l", "escape", "s", "slash", "g", "a", "t", "e", "enter", "l")
        assert isinstance(app.screen, LayersScreen)
        # The modules the filtered tree shows: the matches and the root above them.
        assert first_column(app) == ["(root)", "gate_in", "gate"]
        await press(app, pilot, "down", "down", "enter")
        assert not isinstance(app.screen, LayersScreen)
        tree = app.query_one(ModuleTree)
        assert tree.cursor_node.data.path == "gate"


async def test_before_any_step_the_view_says_how_to_get_statistics(make_app):
    app = make_app(HEALTH)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "l")
        caption = str(app.screen.query_one("#layers-caption").render())
        assert "No statistics yet" in caption and "s to run one" in caption
        await press(app, pilot, "escape", "s", "l")
        assert "after step 1" in str(app.screen.query_one("#layers-caption").render())


async def test_help_lists_the_layers_key(make_app):
    app = make_app(HEALTH)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert any(k.key == "l" and k.description == "Layers" for k in app.screen.keys)


async def test_question_mark_inside_the_layers_view_explains_its_columns_and_keys(make_app):
    app = make_app(HEALTH)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "l", "question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.pane == "Layers"
        assert "dropout's zeros count too" in app.screen.intro
        own = {k.description: k.where for k in app.screen.keys}
        assert own["Sort by next column"] == own["Reverse order"] == "Layers"
        await press(app, pilot, "escape")
        assert isinstance(app.screen, LayersScreen)  # back in the view, not the main screen


async def test_the_layers_key_is_greyed_in_a_replay_made_without_layers(tmp_path):
    folder = str(tmp_path / "R")
    c = SessionController(script_factory(str(HEALTH)), script=str(HEALTH))
    with RecordingWriter(folder, script_meta(str(HEALTH))) as writer:
        writer.write(c.load())
        writer.write(c.handle(cmd.Step()))
    c.close()
    app = ModscopeApp(folder, controller=replay_factory(read_recording(folder)), animations=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot)
        assert app.check_action("layers", ()) is None
        await press(app, pilot, "l")
        assert not isinstance(app.screen, LayersScreen)
        await press(app, pilot, "question_mark")
        assert "recorded with --layers" in app.screen.intro
        assert any(k.key == "l" and not k.enabled for k in app.screen.keys)


def test_the_view_keeps_the_last_sixteen_steps_and_a_rewind_drops_later_ones():
    view = ModelView("script.py")
    for step in range(1, 21):
        view.layers.append(LayerStep(step, ()))
    assert [s.step for s in view.layers] == list(range(5, 21))
    view.back_to(10)
    assert [s.step for s in view.layers] == list(range(5, 11))


async def test_a_replay_of_a_run_recorded_with_layers_shows_them(tmp_path, capsys):
    folder = str(tmp_path / "R")
    assert main(["run", str(HEALTH), "--steps", "3", "--layers", "--record", folder]) == 0
    capsys.readouterr()
    app = ModscopeApp(folder, controller=replay_factory(read_recording(folder)), animations=False)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "l")
        assert isinstance(app.screen, LayersScreen)
        assert "after step 3" in str(app.screen.query_one("#layers-caption").render())
        assert first_column(app) == ["(root)", "hidden", "act", "gate_in", "gate", "out"]
        # Back two recorded steps: the view shows step 1, no step counted twice.
        await press(app, pilot, "escape", "u", "u", "l")
        assert "after step 1" in str(app.screen.query_one("#layers-caption").render())
        assert [s.step for s in app.view.layers] == [1]
