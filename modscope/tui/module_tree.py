"""The module tree: children, parameters, buffers and what failed to register, built lazily.

A tree that fits its pane opens with every node expanded; a bigger one opens one level deep,
and a node's children are created when it is first expanded; a long list shows its first
`CHUNK` entries and a "N more" node; runs of identical numbered siblings fold into one node
(`blocks.0-3299: 3,300 × Block`) as in `modscope tree`. Relabelling touches only nodes that
exist and whose parent is expanded, so a 13,000-module model costs what is on screen.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets import Tree
from textual.widgets.tree import TreeNode, UnknownNodeID

from modscope.core.contract.fmt import printable
from modscope.report.labels import shown_name, unregistered_label
from modscope.tui import labels
from modscope.tui.model_view import ModelView, NodeKind, NodeRef

CHUNK = 100
"""Entries shown at once under one node; the rest sit behind a "N more" node."""

FILTER_LIMIT = 500
"""At most this many matches are shown while filtering ("showing N of M")."""

FIT_ROWS = 40
"""The rows a tree may take to open fully expanded while the pane's height is not known."""


class ModuleTree(Tree[NodeRef]):
    """The live module tree of the loaded model."""

    BORDER_TITLE = "Module tree"
    HELP = (
        "The model's children, parameters (◆) and buffers (◇); ✗ marks what "
        "nn.Module did not register. ●N: N findings on the node, in the worst one's colour; "
        "○: findings only further down; ⚓N: N hooks can fire on the module. A tree that fits "
        "opens fully expanded; in a bigger one, nodes are built as you expand them."
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("right", "expand_or_down", "Expand", show=False),
        Binding("left", "collapse_or_parent", "Collapse", show=False),
        Binding("enter", "select_cursor", "Expand/collapse, values", show=False),
    ]

    DEFAULT_CSS = """
    ModuleTree {
        scrollbar-size-vertical: 1;
    }
    """

    class TensorChosen(Message):
        """`enter` on a tensor: show its values."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    class NodesShown(Message):
        """Tensor nodes were created: their summaries are wanted."""

        def __init__(self, paths: tuple[str, ...]) -> None:
            super().__init__()
            self.paths = paths

    def __init__(self, view: ModelView, *, id: str | None = None) -> None:
        super().__init__(Text("loading…", style="dim"), id=id)
        self.view = view
        self.guide_depth = 3
        self._by_path: dict[str, TreeNode[NodeRef]] = {}
        self._populated: set[int] = set()
        self.filter_text = ""
        self.filter_total = 0
        self._fit_pending = False
        """The first tree came before the pane had a height: the fit rule waits for one."""

    # -- building ------------------------------------------------------------------------------

    def show_model(self) -> None:
        """(Re)build the tree for the view's layout, keeping what was expanded and selected."""
        expanded = [p for p, n in self._by_path.items() if n.is_expanded and n.allow_expand]
        # Only the first tree of a session opens by the fit rule: later rebuilds (a new layout,
        # a cleared filter) keep what the person expanded or collapsed.
        first = not self._by_path
        cursor = self.cursor_node.data if self.cursor_node is not None else None
        self._reset_nodes()
        layout = self.view.layout
        if layout is None:
            self.root.set_label(Text("loading…", style="dim"))
            return
        if self.filter_text:
            self._build_filtered(self.filter_text)
        else:
            self._build_root()
            if first and not self.size.height:
                self._fit_pending = True
            elif first and self.fits():
                self._expand_below(self.root)
            for path in sorted(expanded, key=lambda p: p.count(".") if p else -1):
                node = self._by_path.get(path)
                if node is not None and not node.is_expanded:
                    self._populate(node)
                    node.expand()
        if cursor is not None and cursor.path in self._by_path:
            self.select_path(cursor.path, expand=False)
        title = Text("Module tree")
        if self.filter_text:
            shown = printable(self.filter_text, limit=40)
            title.append(f" (filter: {shown}, {self.filter_total:,} matches)")
        self.border_title = title

    def _reset_nodes(self) -> None:
        self.clear()
        self._by_path = {}
        self._populated = set()

    def _build_root(self) -> None:
        layout = self.view.layout
        assert layout is not None
        root = self.root
        root.data = NodeRef(NodeKind.MODULE, "")
        self._by_path[""] = root
        root.set_label(self._label(root.data))
        self._populate(root)
        root.expand()

    def fits(self) -> bool:
        """Whether the whole tree, every node expanded, fits the pane's height."""
        room = self.size.height or FIT_ROWS
        return self.view.layout is not None and self.view.tree_rows(room) <= room

    def on_resize(self) -> None:
        # The script loaded before the first layout: the fit rule, now that the height is known.
        if self._fit_pending and self.size.height:
            self._fit_pending = False
            if not self.filter_text and self._by_path and self.fits():
                self._expand_below(self.root)

    def _expand_below(self, node: TreeNode[NodeRef]) -> None:
        """Create and expand every node under `node` (the tree is known to be small)."""
        for child in node.children:
            if child.allow_expand:
                self._populate(child)
                child.expand()
                self._expand_below(child)

    def _entries(self, ref: NodeRef) -> list[NodeRef]:
        """The children a node shows, in order: tensors, unregistered, then modules/folds."""
        layout = self.view.layout
        assert layout is not None
        if ref.kind is NodeKind.FOLD:
            m = layout.modules[ref.path]
            return [NodeRef(NodeKind.MODULE, c) for c in m.children[ref.start : ref.stop]]
        m = layout.modules[ref.path]
        out = [NodeRef(NodeKind.TENSOR, t.path) for t in (*m.parameters, *m.buffers)]
        out += [
            NodeRef(NodeKind.UNREGISTERED, u.path) for u in layout.unregistered.get(ref.path, ())
        ]
        i = 0
        for start, count in layout.folds.get(ref.path, ()):
            out += [NodeRef(NodeKind.MODULE, c) for c in m.children[i:start]]
            out.append(NodeRef(NodeKind.FOLD, ref.path, start, start + count))
            i = start + count
        out += [NodeRef(NodeKind.MODULE, c) for c in m.children[i:]]
        return out

    def _populate(self, node: TreeNode[NodeRef], upto: int = 0) -> None:
        """Create a node's children once (and, for `reveal`, at least `upto` entries of them)."""
        ref = node.data
        if ref is None or ref.kind not in (NodeKind.MODULE, NodeKind.FOLD):
            return
        if node.id not in self._populated:
            self._populated.add(node.id)
            self._add_entries(node, self._entries(ref), 0)
        while upto:
            more = node.children[-1] if node.children else None
            if more is None or more.data is None or more.data.kind is not NodeKind.MORE:
                break
            if more.data.start > upto:
                break
            self._show_more(more)

    def _add_entries(self, node: TreeNode[NodeRef], entries: list[NodeRef], start: int) -> None:
        shown: list[str] = []
        for ref in entries[start : start + CHUNK]:
            self._add(node, ref)
            if ref.kind is NodeKind.TENSOR:
                shown.append(ref.path)
        rest = len(entries) - start - CHUNK
        if rest > 0:
            more = NodeRef(NodeKind.MORE, node.data.path if node.data else "", start + CHUNK)
            node.add_leaf(labels.more_label(rest), more)
        if shown:
            self.post_message(self.NodesShown(tuple(shown)))

    def _add(self, parent: TreeNode[NodeRef], ref: NodeRef, *, leaf: bool = False) -> TreeNode:
        label = self._label(ref)
        expandable = not leaf and self._expandable(ref)
        node = parent.add(label, ref, allow_expand=expandable)
        if ref.kind in (NodeKind.MODULE, NodeKind.TENSOR, NodeKind.UNREGISTERED):
            self._by_path[ref.path] = node
        return node

    def _expandable(self, ref: NodeRef) -> bool:
        layout = self.view.layout
        if ref.kind is NodeKind.FOLD:
            return True
        if ref.kind is not NodeKind.MODULE or layout is None:
            return False
        m = layout.modules[ref.path]
        return bool(m.parameters or m.buffers or m.children or layout.unregistered.get(ref.path))

    def _show_more(self, more: TreeNode[NodeRef]) -> None:
        parent = more.parent
        ref = more.data
        if parent is None or ref is None or parent.data is None:
            return
        more.remove()
        self._add_entries(parent, self._entries(parent.data), ref.start)

    # -- labels --------------------------------------------------------------------------------

    def _label(self, ref: NodeRef) -> Text:
        view = self.view
        layout = view.layout
        assert layout is not None
        if ref.kind is NodeKind.MODULE:
            m = layout.modules[ref.path]
            name = layout.model_name if ref.path == "" else None
            hooks = sum(1 for h in view.hooks.get(ref.path, ()) if h.owner == "modscope")
            text = labels.module_label(m, name=name, hooks=hooks)
            labels.badge(text, view.findings_at.get(ref.path), view.findings_below.get(ref.path))
        elif ref.kind is NodeKind.TENSOR:
            t = layout.tensors[ref.path]
            text = labels.tensor_label(
                t,
                view.summaries.get(ref.path),
                view.grads.get(ref.path),
                changed=ref.path in view.changed,
                sampled=ref.path in view.sampled,
            )
            labels.badge(text, view.findings_at.get(ref.path))
        elif ref.kind is NodeKind.UNREGISTERED:
            u = view.unregistered(ref.path)
            text = unregistered_label(u) if u else Text(printable(ref.path))
            labels.badge(text, view.findings_at.get(ref.path))
        elif ref.kind is NodeKind.FOLD:
            m = layout.modules[ref.path]
            first, last = (
                layout.modules[m.children[ref.start]],
                layout.modules[m.children[ref.stop - 1]],
            )
            text = labels.fold_label(first, last, ref.stop - ref.start)
        else:
            text = labels.more_label(0)
        if self.filter_text and ref.kind in (NodeKind.MODULE, NodeKind.TENSOR):
            _highlight_name(text, ref, self.filter_text, layout.model_name)
        return text

    def refresh_labels(self) -> None:
        """Relabel the nodes that exist and can be seen (their parent is expanded)."""
        if self.view.layout is None:
            return
        for node in list(self._by_path.values()):
            parent = node.parent
            if parent is not None and not parent.is_expanded:
                continue
            self._relabel(node)

    def _relabel(self, node: TreeNode[NodeRef]) -> None:
        if node.data is None or node.data.kind is NodeKind.MORE:
            return
        try:
            label = self._label(node.data)
        except KeyError:  # the layout changed under an old node; the rebuild follows
            return
        if label != node.label:
            node.set_label(label)

    def on_tree_node_expanded(self, event: Tree.NodeExpanded[NodeRef]) -> None:
        node = event.node
        if not self.filter_text:
            self._populate(node)
        for child in node.children:
            self._relabel(child)

    def on_tree_node_selected(self, event: Tree.NodeSelected[NodeRef]) -> None:
        ref = event.node.data
        if ref is None:
            return
        if ref.kind is NodeKind.MORE:
            event.stop()
            line = self.cursor_line
            self._show_more(event.node)
            self.cursor_line = line
        elif ref.kind is NodeKind.TENSOR:
            self.post_message(self.TensorChosen(ref.path))

    # -- moving --------------------------------------------------------------------------------

    def action_expand_or_down(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and not node.is_expanded:
            node.expand()
        elif node.children:
            self.action_cursor_down()

    def action_collapse_or_parent(self) -> None:
        node = self.cursor_node
        if node is None:
            return
        if node.allow_expand and node.is_expanded:
            node.collapse()
        elif node.parent is not None:
            self.move_cursor(node.parent)

    def select_path(self, path: str, *, expand: bool = True) -> bool:
        """Move the cursor to a node by its path, creating and expanding what leads to it."""
        if self.filter_text and path not in self._by_path:
            self.set_filter("")
        node = self._by_path.get(path) or self._reveal(path)
        if node is None:
            return False
        ancestor = node.parent
        while ancestor is not None:
            if not ancestor.is_expanded:
                ancestor.expand()
            ancestor = ancestor.parent
        _ = self.last_line  # lines are rebuilt lazily; node.line is valid only after this
        self.move_cursor(node)
        self.scroll_to_node(node, animate=False)
        return True

    def _reveal(self, path: str) -> TreeNode[NodeRef] | None:
        chain = self.view.owners(path)
        node = self._by_path.get("")
        if node is None:
            return None
        for target in [*chain[1:], path]:
            parent_ref = node.data
            assert parent_ref is not None
            entries = self._entries(parent_ref)
            index = next(
                (
                    i
                    for i, e in enumerate(entries)
                    if e.path == target and e.kind is not NodeKind.FOLD
                ),
                None,
            )
            if index is None:
                fold = self._fold_holding(entries, target)
                if fold is None:
                    return None
                self._populate(node, upto=entries.index(fold) + 1)
                node.expand()
                fold_node = next(c for c in node.children if c.data == fold)
                node = fold_node
                entries = self._entries(fold)
                index = next(i for i, e in enumerate(entries) if e.path == target)
            self._populate(node, upto=index + 1)
            node.expand()
            found = self._by_path.get(target)
            if found is None:
                return None
            node = found
        return node

    def _fold_holding(self, entries: list[NodeRef], target: str) -> NodeRef | None:
        layout = self.view.layout
        assert layout is not None
        for e in entries:
            if e.kind is NodeKind.FOLD:
                kids = layout.modules[e.path].children[e.start : e.stop]
                if target in kids:
                    return e
        return None

    # -- filtering -----------------------------------------------------------------------------

    def set_filter(self, text: str) -> None:
        """Show only nodes whose path contains `text` (any case), with their ancestors."""
        self.filter_text = text.strip()
        self.show_model()

    def _build_filtered(self, text: str) -> None:
        matches = self.view.matching(text)
        self.filter_total = len(matches)
        keep = self.view.with_owners(matches[:FILTER_LIMIT])
        root = self.root
        root.data = NodeRef(NodeKind.MODULE, "")
        self._by_path[""] = root
        root.set_label(self._label(root.data))
        self._populated.add(root.id)
        shown: list[str] = []
        self._add_kept(root, "", keep, shown)
        root.expand_all()
        if shown:
            self.post_message(self.NodesShown(tuple(shown)))

    def _add_kept(
        self, parent: TreeNode[NodeRef], path: str, keep: set[str], shown: list[str]
    ) -> None:
        layout = self.view.layout
        assert layout is not None
        m = layout.modules[path]
        refs: Iterable[NodeRef] = (
            *(NodeRef(NodeKind.TENSOR, t.path) for t in (*m.parameters, *m.buffers)),
            *(NodeRef(NodeKind.UNREGISTERED, u.path) for u in layout.unregistered.get(path, ())),
            *(NodeRef(NodeKind.MODULE, c) for c in m.children),
        )
        for ref in refs:
            if ref.path not in keep:
                continue
            node = self._add(parent, ref, leaf=ref.kind is not NodeKind.MODULE)
            if ref.kind is NodeKind.TENSOR:
                shown.append(ref.path)
            if ref.kind is NodeKind.MODULE:
                self._populated.add(node.id)
                self._add_kept(node, ref.path, keep, shown)
                node.allow_expand = bool(node.children)

    def owns(self, node: TreeNode[NodeRef]) -> bool:
        """False for a node of a tree that was rebuilt since (its events arrive late)."""
        try:
            return self.get_node_by_id(node.id) is node
        except UnknownNodeID:
            return False

    def current(self) -> NodeRef | None:
        """What the cursor is on now (valid right after a rebuild, unlike `cursor_node`)."""
        node = self.get_node_at_line(self.cursor_line) if self.cursor_line >= 0 else None
        return node.data if node is not None else self.root.data

    @property
    def node_count(self) -> int:
        """How many nodes exist (for tests and the benchmark: laziness made visible)."""
        count = 0
        stack = [self.root]
        while stack:
            node = stack.pop()
            count += 1
            stack.extend(node.children)
        return count


def _highlight_name(text: Text, ref: NodeRef, needle: str, model_name: str) -> None:
    """Mark where the filter matches the node's own name (not the rest of its label), as the
    label shows the name (escaped, maybe cut)."""
    name = shown_name(ref.path.rpartition(".")[2] if ref.path else model_name)
    start = 2 if ref.kind is NodeKind.TENSOR else 0
    at = name.lower().find(needle.lower())
    if at >= 0:
        text.stylize("reverse", start + at, start + at + len(needle))
