"""Pilot tests: names, class names and prints holding escapes, a newline or a bidi override show
as visible escapes in every pane, and the app keeps running (issue 9)."""

from __future__ import annotations

from textual.command import CommandPalette

from modscope.core.contract.findings import Finding, FindingKind, Severity
from modscope.core.contract.hook_spec import HookId, HookInfo
from modscope.tui import labels
from modscope.tui.app import ModscopeApp
from modscope.tui.detail_pane import DetailPane
from modscope.tui.error_panel import ErrorPanel
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import HooksPane, hook_text
from modscope.tui.load_error_screen import LoadErrorScreen
from modscope.tui.log_pane import LogPane
from modscope.tui.module_tree import ModuleTree
from tests.tui.tui_helpers import press, settle, until

SIZE = (120, 40)
EVIL = "evil\x1b[2J\nname"
SHOWN = "evil\\x1b[2J\\nname"
BUFFER = "buf\x1b[31m"
RTL = "\u202eright"
LONG = "long" + "x" * 200
HIDDEN = ("\x1b", "\n", "\u202e")


def label(app: ModscopeApp, path: str) -> str:
    return str(app.query_one(ModuleTree)._by_path[path].label)


def clean(text: str) -> bool:
    return not any(ch in text for ch in HIDDEN)


def no_controls(text: str) -> bool:
    """For text of several lines: no escape or bidi override."""
    return "\x1b" not in text and "\u202e" not in text


def screen_clean(app: ModscopeApp) -> bool:
    """Nothing reached what the terminal was sent as a command."""
    return no_controls(app.export_screenshot())


async def test_tree_labels_show_escapes_on_one_line(make_app):
    app = make_app("evil_names.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        assert label(app, EVIL).startswith(f"{SHOWN} Linear")
        assert label(app, BUFFER).startswith("◇ buf\\x1b[31m ")
        assert label(app, RTL).startswith("\\u202eright Odd\\x1b[7mClass\\n")
        assert label(app, LONG).startswith("long" + "x" * 55 + "… Identity")
        for path in (EVIL, BUFFER, RTL, LONG, f"{EVIL}.weight"):
            assert clean(label(app, path))
        assert screen_clean(app)


async def test_detail_and_hooks_panes_show_whole_names_escaped(make_app):
    app = make_app("evil_names.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to(EVIL)
        await settle(app, pilot)
        detail = app.query_one(DetailPane)
        assert detail.text.startswith(f"{SHOWN}  Linear") and no_controls(detail.text)
        app.go_to(LONG)
        await settle(app, pilot)
        assert LONG in detail.text.replace("\n", "")  # whole, wrapped, in the details
        app.go_to(BUFFER)
        await settle(app, pilot)
        assert detail.text.startswith("◇ buf\\x1b[31m  buffer") and no_controls(detail.text)
        app.go_to(EVIL)
        await press(app, pilot, "h", "enter", "s")
        hooks = app.query_one(HooksPane)
        assert SHOWN in str(hooks.border_title) and clean(str(hooks.border_title))
        events = app.query_one(HookEventsPane)
        rows = [str(events.get_option_at_index(i).prompt) for i in range(events.option_count)]
        assert any(SHOWN in row for row in rows) and all(clean(row) for row in rows)
        assert no_controls(app.query_one(LogPane).text)
        assert app.is_running and screen_clean(app)


async def test_printed_escapes_show_in_the_log(make_app):
    app = make_app("evil_names.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        log = app.query_one(LogPane)
        assert "\\x1b[31mred\\x1b[0m" in log.text.splitlines()
        log.printed("tab\there\x1b[2J")
        assert log.text.splitlines()[-1] == "tab     here\\x1b[2J"
        assert no_controls(log.text) and screen_clean(app)


async def test_go_to_module_palette_shows_escaped_paths(make_app):
    app = make_app("evil_names.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        await pilot.press("ctrl+p")
        await until(pilot, lambda: isinstance(app.screen, CommandPalette))
        await pilot.press(*"evil")
        await until(pilot, lambda: SHOWN in _palette_text(app))
        assert no_controls(_palette_text(app))
        await pilot.press("enter")
        await until(pilot, lambda: not isinstance(app.screen, CommandPalette))
        await settle(app, pilot)
        assert app.query_one(DetailPane).ref.path == EVIL


def _palette_text(app: ModscopeApp) -> str:
    from textual.command import CommandList

    commands = app.screen.query_one(CommandList)
    return "\n".join(
        str(commands.get_option_at_index(i).prompt) for i in range(commands.option_count)
    )


RAISES_AT_LOAD = """raise ValueError("bad\\x1b[2Jthing\\nsecond \\u202eline")
"""

RAISES_IN_FORWARD = """import torch
from torch import nn


class Boom(nn.Module):
    def __init__(self):
        super().__init__()
        self.w = nn.Parameter(torch.ones(1))

    def forward(self, x):
        raise RuntimeError("boom\\x1b[31m in " + type(self).__name__)


model = Boom()
inputs = torch.ones(1)
"""


async def test_load_error_screen_escapes_the_message_and_keeps_its_lines(make_app, tmp_path):
    script = tmp_path / "raises.py"
    script.write_text(RAISES_AT_LOAD)
    app = make_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await until(pilot, lambda: isinstance(app.screen, LoadErrorScreen))
        text = app.screen.text
        assert "bad\\x1b[2Jthing\nsecond \\u202eline" in text and no_controls(text)
        assert screen_clean(app)


async def test_error_panel_escapes_the_message(make_app, tmp_path):
    script = tmp_path / "boom.py"
    script.write_text(RAISES_IN_FORWARD)
    app = make_app(script)
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        panel = app.query_one(ErrorPanel)
        assert "boom\\x1b[31m in Boom" in panel.text and no_controls(panel.text)
        assert "boom\\x1b[31m in Boom" in app.query_one(LogPane).text
        assert app.is_running and screen_clean(app)


def test_findings_and_hook_rows_escape_what_the_user_named():
    finding = Finding(
        FindingKind.UNREGISTERED_MODULE, Severity.ERROR, EVIL, f"{EVIL} is odd", f"rename {EVIL}"
    )
    text = labels.finding_text(finding).plain
    assert text.count(SHOWN) == 3 and len(text.splitlines()) == 3 and clean(text.replace("\n", ""))
    hook = HookInfo(
        HookId("_forward_hooks", 1),
        EVIL,
        "forward",
        "script",
        "ev\x1bil.<locals>.f\nx",
        "/tmp/a\x1b.py:3",  # absolute: shown relative to the script's folder
    )
    text = hook_text(hook, "/tmp/s.py").plain
    assert "ev\\x1bil.<locals>.f\\nx  a\\x1b.py:3" in text and no_controls(text)
