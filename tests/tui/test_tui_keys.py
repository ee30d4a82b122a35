"""Pilot tests: each key of docs/design.md section 3 pressed on the article's model, and what it
changed."""

from __future__ import annotations

import pytest
from textual.command import CommandList, CommandPalette
from textual.widgets import DataTable, Input
from textual.widgets._footer import FooterKey

from modscope.control.updates import InternalError
from modscope.core.contract.steps import Phase, UserError
from modscope.tui.app import ModscopeApp
from modscope.tui.detail_pane import DetailPane
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.filter_field import FilterField
from modscope.tui.findings_pane import FindingsPane
from modscope.tui.help_screen import HelpScreen
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.layers_screen import LayersScreen
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.module_tree import ModuleTree
from modscope.tui.values_screen import ValuesScreen
from tests.tui.tui_helpers import SCRIPTS, press, settle, status, until

SIZE = (100, 40)


def label(app: ModscopeApp, path: str) -> str:
    tree = app.query_one(ModuleTree)
    return str(tree._by_path[path].label)


async def test_first_screen_shows_the_tree_and_status(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert [str(n.label) for n in tree.root.children] == [
            "powModel PowModel  1 param",
            "logModel LogModel  1 param",
        ]
        assert "model PowLogModel  2 params" in str(tree.root.label)
        assert "powlog.py" in status(app) and "step 0" in status(app)
        assert "next forward" in status(app) and "train" in status(app)
        assert "idle" in status(app)
        assert app.focused is tree


async def test_s_runs_one_iteration_and_relabels(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "down", "right")
        assert "tensor 1.0000" in label(app, "powModel.powParam")
        await press(app, pilot, "s")
        assert "step 1" in status(app)
        assert "loss 26.7463" in status(app) and "out tensor 4.8283" in status(app)
        text = label(app, "powModel.powParam")
        assert "tensor 1.1034" in text and "Δ" in text
        assert app.view.changed == {"powModel.powParam", "logModel.logParam"}


async def test_ten_steps_then_d_shows_the_article_values(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press(*["s"] * 10)  # queued while earlier ones run: none is dropped
        await settle(app, pilot)
        assert "step 10" in status(app)
        await press(app, pilot, "d")
        assert isinstance(app.screen, DiffScreen)
        table = app.screen.query_one(DataTable)
        rows = {str(table.get_row(k)[0]): [str(c) for c in table.get_row(k)] for k in table.rows}
        assert "tensor 1.2430" in rows["powModel.powParam"][2]
        assert "tensor 1.9815" in rows["logModel.logParam"][2]
        assert "tensor 1.2428" in rows["powModel.powParam"][1]  # after step 9
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, DiffScreen)


async def test_n_three_times_is_one_iteration(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "n")
        assert "step 0" in status(app) and "next backward" in status(app)
        assert "out tensor 4.8283" in status(app)
        await press(app, pilot, "n")
        assert "next optimizer" in status(app)
        await press(app, pilot, "n")
        assert "step 1" in status(app) and "next forward" in status(app)
        await press(app, pilot, "down", "right")
        assert "tensor 1.1034" in label(app, "powModel.powParam")


async def test_s_after_a_partial_n_finishes_the_iteration(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "n", "s")
        assert "step 1" in status(app) and "next forward" in status(app)
        assert len(app.view.history) == 1


async def test_e_toggles_train_and_eval(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "e")
        assert "eval" in status(app)
        assert make_app.session.model.training is False
        assert "eval" in str(app.query_one(ModuleTree).root.label)
        await press(app, pilot, "e")
        assert make_app.session.model.training is True
        assert "eval" not in str(app.query_one(ModuleTree).root.label)


async def test_space_runs_continuously_and_space_pauses(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("space")
        await until(pilot, lambda: app.view.status.step >= 3)
        assert app.worker.running
        await pilot.press("space")
        await settle(app, pilot)
        stopped_at = app.view.status.step
        assert not app.worker.running and "idle" in status(app)
        await settle(app, pilot)
        assert app.view.status.step == stopped_at


async def test_keys_pressed_during_an_iteration_are_queued(make_app):
    app = make_app("slow.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s", "s", "s")
        await until(pilot, lambda: app.view.status.busy and app.view.status.queued == 2)
        await pilot.pause()
        assert "queued 2" in status(app)
        gate = make_app.session.script.module.gate
        for _ in range(3):
            gate.release()
        await settle(app, pilot)
        assert "step 3" in status(app) and "queued" not in status(app)


async def test_slash_filters_the_tree_by_name(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "slash")
        assert isinstance(app.focused, Input)
        await press(app, pilot, "l", "o", "g")
        tree = app.query_one(ModuleTree)
        assert [str(n.label).split()[0] for n in tree.root.children] == ["logModel"]
        assert "logParam" in str(tree.root.children[0].children[0].label)
        await press(app, pilot, "escape")
        assert [str(n.label).split()[0] for n in tree.root.children] == ["powModel", "logModel"]
        assert app.focused is tree


async def test_question_mark_shows_help_for_the_focused_pane(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        assert isinstance(app.screen, HelpScreen)
        assert app.screen.pane == "Module tree"
        described = {k.description for k in app.screen.keys}
        assert {"Step", "Phase", "Run", "Diff", "Quit"} <= described
        assert "Expand" in described
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, HelpScreen)


async def test_question_mark_inside_the_diff_view_helps_with_that_view(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "d", "question_mark")
        assert isinstance(app.screen, HelpScreen) and app.screen.pane == "Diff"
        where = {k.description: k.where for k in app.screen.keys}
        assert where["Hide/show unchanged"] == where["Close"] == "Diff"
        await press(app, pilot, "escape")
        assert isinstance(app.screen, DiffScreen)


async def test_the_help_follows_the_focus_to_each_pane(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for pane, title in ((HooksPane, "Hooks"), (LogPane, "Log"), (DetailPane, "Details")):
            app.query_one(pane).focus()
            await press(app, pilot, "question_mark")
            assert isinstance(app.screen, HelpScreen) and app.screen.pane == title
            assert app.screen.intro == pane.HELP
            await press(app, pilot, "escape")
        await press(app, pilot, "slash", "f1")
        assert isinstance(app.screen, HelpScreen) and app.screen.pane == "Filter"


async def test_textual_s_help_panel_shows_the_focused_pane_s_help(make_app):
    from textual.widgets import HelpPanel, Markdown

    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.query_one(HooksPane).focus()
        app.action_show_help_panel()
        await pilot.pause()
        shown = app.screen.query_one(HelpPanel).query_one(Markdown)
        assert shown.source == HooksPane.HELP
        app.query_one(ModuleTree).focus()
        await pilot.pause()
        assert shown.source == ModuleTree.HELP


@pytest.mark.parametrize(
    "owner",
    [
        ModuleTree,
        DetailPane,
        HooksPane,
        FindingsPane,
        LogPane,
        HookEventsPane,
        FilterField,
        DiffScreen,
        LayersScreen,
    ],
)
def test_a_help_reads_the_same_as_markdown(owner):
    # `?` shows a HELP as written and Textual's help panel renders it as markdown: plain
    # sentences (no emphasis, code or links) read the same in both.
    from markdown_it import MarkdownIt

    assert owner.HELP
    tokens = MarkdownIt("gfm-like").parse(owner.HELP)
    assert [t.type for t in tokens] == ["paragraph_open", "inline", "paragraph_close"]
    children = tokens[1].children or []
    assert [(c.type, c.content) for c in children] == [("text", owner.HELP)]


async def test_the_footer_follows_the_state_its_keys_depend_on(make_app):
    # Nothing asks for a footer refresh: each piece of state the keys read is a reactive that
    # refreshes the bindings when it changes.
    app = make_app()

    def footer() -> set[str]:
        return {k.action for k in app.screen.query(FooterKey)}

    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "dismiss_extra" not in footer() and "traceback" not in footer()
        await press(app, pilot, "slash")
        assert "dismiss_extra" in footer()
        await press(app, pilot, "escape")
        assert "dismiss_extra" not in footer()
        error = UserError("boom", "RuntimeError", None, None, Phase.FORWARD)
        app.query_one(ErrorPanel).show(error, app.script)
        await pilot.pause()
        assert "dismiss_extra" in footer()
        app.last_internal_error = InternalError("a bug", "Traceback ...")
        await pilot.pause()
        assert "traceback" in footer()
        await press(app, pilot, "escape")
        assert "dismiss_extra" not in footer() and "traceback" in footer()


async def test_the_tree_s_help_explains_its_marks(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "question_mark")
        assert all(mark in app.screen.intro for mark in ("◆", "◇", "✗", "●N", "○", "⚓N"))


async def test_r_reloads_and_leaves_no_hook(make_app):
    app = make_app(hooks=["logModel:forward"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s")
        first = make_app.session
        assert first.model.logModel._forward_hooks
        await press(app, pilot, "r")
        assert len(make_app.sessions) == 2
        assert not first.model.logModel._forward_hooks
        assert not first.hooks.attached
        assert "step 0" in status(app)
        assert "reloading powlog.py" in app.query_one(LogPane).text


async def test_q_quits_with_status_0(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("q")
    assert app.return_code == 0


async def test_ctrl_q_quits_too(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+q")
    assert app.return_code == 0


async def test_load_error_screen_then_q_exits_2(make_app, tmp_path):
    script = tmp_path / "broken.py"
    script.write_text("import torch\ndef broken(:\n    pass\n")
    app = make_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, LoadErrorScreen)
        text = app.screen.text
        assert "broken.py, line 2" in text and "def broken(:" in text
        assert "SyntaxError" in text
        await pilot.press("q")
    assert app.return_code == 2


async def test_r_retries_after_the_script_is_fixed(make_app, tmp_path):
    script = tmp_path / "fixme.py"
    script.write_text("import torch\nraise RuntimeError('not yet')\n")
    app = make_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert isinstance(app.screen, LoadErrorScreen)
        assert "not yet" in app.screen.text and "fixme.py, line 2" in app.screen.text
        script.write_text((SCRIPTS / "powlog.py").read_text())
        await press(app, pilot, "r")
        assert not isinstance(app.screen, LoadErrorScreen)
        await press(app, pilot, "s")
        assert "step 1" in status(app)
        await pilot.press("q")
    assert app.return_code == 0


async def test_an_error_mid_step_is_shown_and_the_session_goes_on(make_app):
    app = make_app("raises.py")
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        assert "step 1" in status(app)
        await press(app, pilot, "s")
        panel = app.query_one("#error")
        assert panel.display
        assert "raises.py, line 17" in panel.text and "step 2, forward" in panel.text
        assert "flaky forward failed on call 2" in panel.text
        assert "raise ValueError" in panel.text
        assert "raises.py, line 17" in app.query_one(LogPane).text
        assert any("flaky forward failed" in n.message for n in app._notifications)
        assert "step 1" in status(app)
        await press(app, pilot, "e")
        assert "eval" in status(app)
        await press(app, pilot, "s")
        assert "step 2" in status(app)
        assert not panel.display


async def test_a_nan_loss_is_a_finding_not_an_error(make_app):
    app = make_app("nan_loss.py")
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        assert "loss nan" in status(app)
        assert any(f.kind == "nonfinite" for f in app.view.findings)
        assert app.query_one("#error").display is False
        await press(app, pilot, "s")
        assert "step 2" in status(app)


async def test_markup_in_names_and_prints_shows_literally(make_app):
    app = make_app("traps.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        names = [str(n.label) for n in tree.root.children]
        assert any(n.startswith("blocks[attn] Block") for n in names)
        assert "x[/y] and [bold]not bold[/bold]" in app.query_one(LogPane).plain_lines
        app.go_to("blocks[attn]")
        await settle(app, pilot)
        assert "blocks[attn]" in app.query_one(DetailPane).text


async def test_tree_marks_unregistered_shared_and_frozen(make_app):
    app = make_app("traps.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        for path in ("head", "frozen"):
            app.go_to(path)
            await press(app, pilot, "right")
        assert "shared with tail.weight" in label(app, "head.weight")
        assert "frozen" in label(app, "frozen.weight")
        assert "not registered (module, in a plain list)" in label(app, "helpers[0]")
        assert "●1" in label(app, "helpers[0]")


async def test_enter_on_a_finding_jumps_to_its_node(make_app):
    app = make_app("traps.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        kinds = [f.kind for f in app.view.findings]
        assert "unregistered-module" in kinds and "shared-parameter" in kinds
        findings = app.query_one("#findings")
        findings.focus()
        index = kinds.index("unregistered-module")
        findings.highlighted = index
        await press(app, pilot, "enter")
        tree = app.query_one(ModuleTree)
        assert app.focused is tree
        assert tree.cursor_node is not None and tree.cursor_node.data.path == "helpers[0]"


async def test_enter_on_a_tensor_opens_its_values_paged(make_app):
    app = make_app("wide.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("0.weight")
        await settle(app, pilot)
        await press(app, pilot, "enter")
        assert isinstance(app.screen, ValuesScreen)
        caption = str(app.screen.query_one("#values-caption").render())
        assert "values 1-256 of 1,600 (page 1 of 7)" in caption
        assert "[0, 0]" in app.screen.text
        await press(app, pilot, "pagedown")
        assert "[6, 16]" in app.screen.text  # 256 = 6 * 40 + 16
        await press(app, pilot, "g")
        assert "no gradient" in app.screen.text
        await press(app, pilot, "escape")
        assert not isinstance(app.screen, ValuesScreen)


async def test_detail_pane_shows_history_and_module_facts(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s", "s", "s")
        app.go_to("logModel")
        await settle(app, pilot)
        text = app.query_one(DetailPane).text
        assert "LogModel" in text and "train" in text and "hooks" in text
        app.go_to("logModel.logParam")
        await settle(app, pilot)
        text = app.query_one(DetailPane).text
        assert "mean per step, steps 1-3: 1.4994 → 1.8801" in text
        assert "gradient norm per step" in text


async def test_hooks_from_the_command_line_attach_at_start(make_app):
    app = make_app(hooks=["logModel:forward-pre:scale=2"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        assert "out tensor 5.5215" in status(app)
        assert "1 hook" in status(app)
        app.go_to("logModel")
        await settle(app, pilot)
        assert "logModel:forward-pre:scale=2" in app.query_one(DetailPane).text
        assert "logModel forward-pre scale" in app.query_one(LogPane).text


async def test_a_bad_hook_spec_is_shown_and_the_app_goes_on(make_app):
    app = make_app(hooks=["nope:forward"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert "no module 'nope'" in app.query_one(LogPane).text
        await press(app, pilot, "s")
        assert "step 1" in status(app)


async def test_command_palette_goes_to_a_module(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await pilot.press(*"logModel")
        await until(
            pilot,
            lambda: (
                isinstance(app.screen, CommandPalette)
                and app.screen.query_one(CommandList).option_count > 0
            ),
        )
        await pilot.press("enter")
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert tree.cursor_node is not None and tree.cursor_node.data.path == "logModel"


async def test_a_large_container_folds_and_builds_lazily(make_app):
    app = make_app("many_blocks.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert [str(n.label).split(":")[0] for n in tree.root.children] == ["0-299"]
        assert tree.node_count == 2
        app.go_to("250.0.weight")
        await settle(app, pilot)
        assert tree.cursor_node is not None and tree.cursor_node.data.path == "250.0.weight"
        assert tree.node_count < 400
        assert (
            "Linear" in app.query_one(DetailPane).text or "weight" in app.query_one(DetailPane).text
        )


@pytest.mark.parametrize("size", [(60, 20), (40, 12)])
async def test_small_terminals_keep_working(make_app, size):
    app = make_app()
    async with app.run_test(size=size) as pilot:
        await press(app, pilot, "s", "down", "right")
        assert "step 1" in status(app)
        assert "tensor 1.1034" in label(app, "powModel.powParam")
        assert app.query_one(ModuleTree).region.height >= 3


async def test_c_continues_from_a_pause_hook(make_app):
    app = make_app(hooks=["logModel:forward:pause"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await until(pilot, lambda: bool(app.view.status.paused_at))
        await pilot.pause()
        assert "paused in logModel (forward) · c continues" in status(app)
        await pilot.press("c")
        await settle(app, pilot)
        assert "step 1" in status(app) and "paused in" not in status(app)
        assert "logModel forward pause" in app.query_one(LogPane).text


async def test_quit_and_reload_while_paused_in_a_hook(make_app):
    app = make_app(hooks=["logModel:forward:pause"])
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("s")
        await until(pilot, lambda: bool(app.view.status.paused_at))
        await pilot.press("r")
        await until(pilot, lambda: len(make_app.sessions) == 2)
        await settle(app, pilot)
        assert "step 0" in status(app)
        assert not make_app.sessions[0].model.logModel._forward_hooks
        await pilot.press("s")
        await until(pilot, lambda: bool(app.view.status.paused_at))
        await pilot.press("q")
    assert app.return_code == 0
    assert app.worker.join(10)
    assert not make_app.session.model.logModel._forward_hooks
