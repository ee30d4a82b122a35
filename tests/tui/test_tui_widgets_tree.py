"""Pilot tests: a module tree that fits its pane opens fully expanded; a bigger one opens one
level deep and is built lazily; a rebuild keeps what the person collapsed."""

from __future__ import annotations

from textual.widgets.tree import TreeNode

from modscope.tui.module_tree import ModuleTree
from tests.tui.tui_helpers import press, settle

SIZE = (100, 40)


def shown(tree: ModuleTree) -> list[str]:
    """The paths of the nodes on screen (their ancestors expanded), in order."""
    out: list[str] = []

    def walk(node: TreeNode) -> None:
        if node.data is not None:
            out.append(node.data.path)
        if node.is_expanded:
            for child in node.children:
                walk(child)

    walk(tree.root)
    return out


async def test_the_articles_model_opens_fully_expanded(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert shown(tree) == [
            "",
            "powModel",
            "powModel.powParam",
            "logModel",
            "logModel.logParam",
        ]
        assert tree.fits() and tree.node_count == 5
        assert app.view.tree_rows(100) == 5
        await press(app, pilot, "down", "down")
        assert tree.cursor_node is not None and tree.cursor_node.data.path == "powModel.powParam"


async def test_a_tree_taller_than_its_pane_opens_one_level_deep(make_app):
    app = make_app("many_blocks.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert not tree.fits()
        assert app.view.tree_rows(tree.size.height) > tree.size.height
        assert tree.node_count == 2
        assert not tree.root.children[0].is_expanded


async def test_the_fit_rule_uses_the_panes_height(make_app):
    # traps.py takes 13 rows expanded: more than the tree pane of a 12-row terminal holds.
    app = make_app("traps.py")
    async with app.run_test(size=(100, 12)) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert app.view.tree_rows(100) > tree.size.height > 0
        assert not any(node.is_expanded for node in tree.root.children)
    app = make_app("traps.py")
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        tree = app.query_one(ModuleTree)
        assert tree.fits()
        assert "blocks[attn].proj.weight" in shown(tree)


async def test_a_rebuild_keeps_what_was_collapsed(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "down", "left")  # collapse powModel
        tree = app.query_one(ModuleTree)
        assert "powModel.powParam" not in shown(tree)
        before = tree.root.children[0]
        await press(app, pilot, "e")  # train -> eval: a new layout, the tree is rebuilt
        assert tree.root.children[0] is not before
        assert not app.view.status.training
        assert "powModel.powParam" not in shown(tree)
        assert "logModel.logParam" in shown(tree)


async def test_a_layout_that_comes_before_the_panes_height_waits_for_it(make_app):
    # The script loaded before the first layout (a loaded machine): the fit rule must use the
    # pane's real height, not a guess. traps.py takes 13 rows expanded.
    for size, expanded in (((100, 12), False), (SIZE, True)):
        app = make_app("traps.py")
        async with app.run_test(size=size) as pilot:
            await settle(app, pilot)
            tree = app.query_one(ModuleTree)
            tree._reset_nodes()
            height = tree.styles.height
            tree.styles.height = 0  # no height yet, as before the first layout
            await pilot.pause()
            tree.show_model()
            assert tree._fit_pending
            assert not any(node.is_expanded for node in tree.root.children)
            tree.styles.height = height
            await settle(app, pilot)
            assert not tree._fit_pending and tree.size.height > 0
            assert any(node.is_expanded for node in tree.root.children) is expanded
