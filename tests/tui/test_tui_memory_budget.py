"""Pilot tests: a key diffed by digest and sample (past the memory budget) is marked `≈` in the
tree and in the diff view, whose caption says what the mark means."""

from __future__ import annotations

import textwrap
from collections.abc import Callable
from pathlib import Path

from textual.widgets import DataTable, Static

from modscope.control.controller import controller_factory
from modscope.core.session import Session, SessionOptions
from modscope.tui.app import ModscopeApp
from modscope.tui.diff_screen import DiffScreen
from modscope.tui.module_tree import ModuleTree
from tests.tui.tui_helpers import press

SCRIPT = """
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Sequential(nn.Linear(100, 100), nn.Linear(100, 1))
inputs = torch.ones(4, 100)
optimizer = torch.optim.SGD(model.parameters(), lr=0.01)


def loss_fn(out):
    return out.pow(2).mean()
"""


def budgeted_app(tmp_path: Path, budget: int) -> ModscopeApp:
    path = tmp_path / "budgeted.py"
    path.write_text(textwrap.dedent(SCRIPT))

    def factory(sink: Callable[[str], None], pause: Callable[..., None]) -> Session:
        return Session.load(
            str(path), options=SessionOptions(sink=sink, pause=pause, memory_budget=budget)
        )

    controller = controller_factory(factory, script=str(path))
    return ModscopeApp(str(path), controller=controller, animations=False)


async def test_a_sampled_key_is_marked_in_the_tree_and_the_diff_view(tmp_path: Path) -> None:
    # 0.weight (40 kB) does not fit 2 kB; the other keys (804 bytes) do.
    app = budgeted_app(tmp_path, 2000)
    try:
        async with app.run_test(size=(120, 40)) as pilot:
            await press(app, pilot, "s")
            tree = app.query_one(ModuleTree)
            labels = {str(n.data.path): n.label.plain for n in _nodes(tree) if n.data}
            assert labels["0.weight"].split("Δ")[1].startswith("≈")
            assert "≈" not in labels["1.weight"]
            await press(app, pilot, "d")
            assert isinstance(app.screen, DiffScreen)
            caption = str(app.screen.query_one("#diff-caption", Static).content)
            assert "≈ 1 past the memory budget" in caption
            table = app.screen.query_one(DataTable)
            weight = table.get_row("0.weight")
            assert str(weight[3]).startswith("≈") and str(weight[4]).startswith("≈")
            assert not str(table.get_row("1.weight")[3]).startswith("≈")
    finally:
        app.worker.stop()
        assert app.worker.join(10)


def _nodes(tree: ModuleTree) -> list:
    found, stack = [], [tree.root]
    while stack:
        node = stack.pop()
        found.append(node)
        stack.extend(node.children)
    return found
