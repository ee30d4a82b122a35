"""SVG snapshots of the app's screens on small fixed models (pytest-textual-snapshot).

Each test also asserts, before the screenshot, that the app is alive and shows a known label:
a crashed app saves a blank SVG that would otherwise pass. The findings come from the
inventory (the doctor is switched off here) so the pictures pin the app's look, not the
doctor's wording; `test_tui_keys.py` covers the doctor's findings in the app.
Regenerate with `pytest tests/tui --snapshot-update`, then open the SVGs and look at them.
"""

from __future__ import annotations

from textual.pilot import Pilot

from modscope.tui.app import ModscopeApp
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.help_screen import HelpScreen
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.module_tree import ModuleTree
from modscope.tui.values_screen import ValuesScreen
from tests.tui.tui_helpers import press, settle, status

SIZE = (100, 32)


async def ready(app: ModscopeApp, pilot: Pilot, *keys: str) -> None:
    """Load, press `keys`, wait for the session thread, and drop toasts (they time out)."""
    await settle(app, pilot)
    await press(app, pilot, *keys)
    app.clear_notifications()
    await pilot.pause()
    assert "internal error" not in app.query_one(LogPane).text


def test_first_screen(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot)
        assert "step 0" in status(app)
        assert "powModel PowModel" in str(app.query_one(ModuleTree).root.children[0].label)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_expanded_tree(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "down", "left")
        tree = app.query_one(ModuleTree)
        assert "tensor 1.0000" in str(tree._by_path["logModel.logParam"].label)
        assert tree.cursor_node.data.path == "powModel"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_after_steps(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await settle(app, pilot)
        app.go_to("powModel.powParam")
        app.go_to("logModel.logParam")
        await ready(app, pilot, "s", "s", "s")
        assert "step 3" in status(app) and "loss 1.5248" in status(app)
        assert "tensor 1.8801" in app.query_one(DetailPane).text

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_diff_view(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await settle(app, pilot)
        await pilot.press(*["s"] * 10)
        await ready(app, pilot, "d")
        assert isinstance(app.screen, DiffScreen)
        keys = [k for k, _ in app.screen.rows()]
        assert keys == ["powModel.powParam", "logModel.logParam"]

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_findings_and_markup_names(snap_compare, make_app):
    app = make_app("traps.py")

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot)
        app.go_to("head.weight")
        await ready(app, pilot, "tab", "tab", "tab")  # tree, details, hooks, findings
        assert app.focused is app.query_one("#findings")
        assert "x[/y] and [bold]not bold[/bold]" in app.query_one(LogPane).plain_lines
        assert [f.kind for f in app.view.findings][:1] == ["unregistered-module"]

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_help(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.pane == "Module tree"

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_error_shown(snap_compare, make_app):
    app = make_app("raises.py")

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s", "s")
        assert "raises.py, line 17" in app.query_one("#error").text

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_load_error_screen(snap_compare, make_app, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import torch\n\nmodel = torch.nn.Linear(2, 2\n")
    app = make_app(script)

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot)
        assert isinstance(app.screen, LoadErrorScreen)
        assert "broken.py, line 3" in app.screen.text

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_values_view(snap_compare, make_app):
    app = make_app("wide.py")

    async def run_before(pilot: Pilot) -> None:
        await settle(app, pilot)
        app.go_to("0.weight")
        await ready(app, pilot, "enter", "pagedown")
        assert isinstance(app.screen, ValuesScreen) and "[6, 16]" in app.screen.text

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_filter(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "slash", "p", "a", "r", "a", "m")
        tree = app.query_one(ModuleTree)
        assert tree.filter_total == 2

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_folded_siblings(snap_compare, make_app):
    app = make_app("many_blocks.py")

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "down", "right")
        assert "0-299: 300 × Sequential" in str(app.query_one(ModuleTree).cursor_node.label)

    assert snap_compare(app, terminal_size=SIZE, run_before=run_before)


def test_narrow_terminal(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s", "down", "down")
        assert "step 1" in status(app)
        assert app.query_one(DetailPane).display and not app.query_one("#bottom").display

    assert snap_compare(app, terminal_size=(60, 20), run_before=run_before)


def test_tiny_terminal(snap_compare, make_app):
    app = make_app()

    async def run_before(pilot: Pilot) -> None:
        await ready(app, pilot, "s", "down")
        assert "tensor 1.1034" in str(app.query_one(ModuleTree)._by_path["powModel.powParam"].label)

    assert snap_compare(app, terminal_size=(40, 12), run_before=run_before)
