"""The detail pane: everything about the selected node (tensor, module, unregistered object)."""

from __future__ import annotations

import io
from typing import ClassVar

from rich.console import Console, Group, RenderableType
from rich.table import Table
from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import VerticalScroll
from textual.message import Message
from textual.reactive import reactive
from textual.theme import Theme
from textual.widgets import Static

from modscope.core.contract.findings import Finding
from modscope.core.contract.fmt import (
    format_bytes,
    format_count,
    format_number,
    format_shape,
    format_value,
    plural,
    printable,
    printable_lines,
    sparkline,
    summary_line,
)
from modscope.report.labels import unregistered_label
from modscope.tui import hook_sections, labels
from modscope.tui.hook_sections import Palette
from modscope.tui.model_view import ModelView, NodeKind, NodeRef, finite

INLINE_VALUES = 16
KEY_WIDTH = 10


class DetailPane(VerticalScroll):
    """Shows the node the tree's cursor is on (`ref`); redraws when the view changes."""

    BORDER_TITLE = "Details"
    HELP = "The selected node: summary, values, gradient, history, hooks."

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("enter", "values", "Values", id="values"),
    ]

    DEFAULT_CSS = """
    DetailPane > Static {
        width: 1fr;
    }
    """

    class ValuesWanted(Message):
        """`enter` on a tensor's details: show all its values."""

        def __init__(self, path: str) -> None:
            super().__init__()
            self.path = path

    ref: reactive[NodeRef | None] = reactive(
        None, always_update=True, init=False, repaint=False, bindings=True
    )
    """The node shown; setting it (even to the same node) redraws, and `enter` follows it."""

    def __init__(self, view: ModelView, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.view = view
        self._content: RenderableType = Text("")
        self._palette = Palette()
        self.can_focus = True

    def compose(self) -> ComposeResult:
        yield Static(Text("Select a node in the tree.", style="dim"), id="detail-body")

    @property
    def text(self) -> str:
        """The plain text shown (for tests)."""
        console = Console(
            width=200, file=io.StringIO(), record=True, color_system=None, legacy_windows=False
        )
        console.print(self._content)
        return console.export_text()

    def on_mount(self) -> None:
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, _: Theme) -> None:
        self.refresh_detail()

    def show(self, ref: NodeRef | None) -> None:
        self.ref = ref

    def watch_ref(self) -> None:
        if self.is_mounted:
            self.refresh_detail()

    def refresh_detail(self) -> None:
        """Draw the node again from the view (new summaries, hooks, findings or theme)."""
        body = self.query_one("#detail-body", Static)
        self._palette = Palette.of(self.app.theme_variables)
        ref = self.ref
        if ref is None or self.view.layout is None:
            self._content = Text("Select a node in the tree.", style="dim")
            body.update(self._content)
            return
        try:
            if ref.kind is NodeKind.TENSOR:
                content = self._tensor(ref.path)
            elif ref.kind is NodeKind.MODULE:
                content = self._module(ref.path)
            elif ref.kind is NodeKind.UNREGISTERED:
                content = self._unregistered(ref.path)
            elif ref.kind is NodeKind.FOLD:
                content = self._fold(ref)
            else:
                content = Text("More entries: press enter on this node to show them.", style="dim")
        except KeyError:  # the layout changed; the tree rebuilds and selects again
            content = Text("…", style="dim")
        self._content = content
        body.update(content)

    def on_resize(self) -> None:
        self.refresh_detail()

    def action_values(self) -> None:
        if self.ref is not None and self.ref.kind is NodeKind.TENSOR:
            self.post_message(self.ValuesWanted(self.ref.path))

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "values":
            return self.ref is not None and self.ref.kind is NodeKind.TENSOR
        return True

    # -- what is shown ---------------------------------------------------------------------------

    def _spark_width(self) -> int:
        return max(8, min(60, self.size.width - KEY_WIDTH - 4))

    def _tensor(self, path: str) -> RenderableType:
        view = self.view
        t = view.layout.tensors[path]  # type: ignore[union-attr]
        rows = _rows()
        head = Text()
        colours = self._palette
        head.append(
            "◆ " if t.is_parameter else "◇ ",
            style=colours.primary if t.is_parameter else colours.secondary,
        )
        head.append(printable(path), style="bold")
        head.append("  parameter" if t.is_parameter else "  buffer", style="dim")
        facts = (
            f"{format_shape(t.shape)} {t.dtype} {t.device}, {format_count(t.numel)} "
            f"element{'s' if t.numel != 1 else ''}, {format_bytes(t.nbytes)}"
        )
        if t.is_parameter:
            facts += ", requires_grad" if t.requires_grad else ", frozen (requires_grad=False)"
        elif not t.persistent:
            facts += ", non-persistent (not in state_dict)"
        _row(rows, "tensor", Text(facts))
        summary = view.summaries.get(path)
        value = Text(
            summary_line(summary) if summary else "(summary pending)",
            style=f"bold {colours.warning}" if path in view.changed else "",
        )
        record = view.last_record
        if record is not None and path in view.changed:
            delta = record.diff.max_abs_delta.get(path)
            value.append(
                f"   Δ max {format_number(delta)} at step {record.step}", style=colours.warning
            )
        _row(rows, "value", value)
        if t.is_parameter:
            grad = view.grads.get(path)
            grad_text = (
                Text(summary_line(grad))
                if grad
                else Text("None" + (" (no backward yet)" if not view.history else ""), style="dim")
            )
            _row(rows, "grad", grad_text)
        history = view.history_of(path)
        if finite(history):
            width = self._spark_width()
            line = Text(sparkline(history, width), style=colours.primary)
            shown = history[-width:]
            line.append(
                f"  mean per step, steps {len(history) - len(shown) + 1}-"
                f"{len(history)}: {format_number(shown[0])} → "
                f"{format_number(shown[-1])}",
                style="dim",
            )
            _row(rows, "history", line)
        elif view.history:
            _row(rows, "history", Text("not in state_dict: no history", style="dim"))
        if t.is_parameter:
            grads = view.grad_history_of(path)
            if finite(grads):
                width = self._spark_width()
                line = Text(sparkline(grads, width), style=colours.success)
                line.append("  gradient norm per step", style="dim")
                _row(rows, "grad hist", line)
        if summary is not None and summary.values is not None:
            shown_values = summary.values[:INLINE_VALUES]
            _row(rows, "values", Text("[" + ", ".join(format_value(v) for v in shown_values) + "]"))
        if t.numel > INLINE_VALUES or summary is None or summary.values is None:
            _row(
                rows,
                "values",
                Text(f"enter: all {format_count(t.numel)} values, paged", style="dim italic"),
            )
        marks = []
        if t.shared_with:
            shared = ", ".join(printable(n) for n in t.shared_with)
            marks.append(Text(f"shared with {shared}", style=colours.success))
        if t.has_grad_fn:
            marks.append(
                Text("carries autograd history (has a grad_fn)", style=f"bold {colours.error}")
            )
        if t.note:
            marks.append(Text(printable(t.note), style="dim"))
        for mark in marks:
            _row(rows, "note", mark)
        return Group(head, rows, *self._findings(path))

    def _module(self, path: str) -> RenderableType:
        view = self.view
        layout = view.layout
        assert layout is not None
        m = layout.modules[path]
        head = Text()
        head.append(printable(layout.model_name if path == "" else path), style="bold")
        head.append(f"  {printable(m.type_name)}", style="dim")
        head.append(
            "  train" if m.training else "  eval",
            style=self._palette.success if m.training else f"bold {self._palette.warning}",
        )
        rows = _rows()
        totals = m.totals
        params = f"{format_count(totals.parameters)} ({format_count(totals.trainable)} trainable)"
        _row(rows, "params", Text(params))
        _row(rows, "buffers", Text(plural(totals.buffers, "element")))
        _row(rows, "size", Text(format_bytes(totals.bytes)))
        own = ", ".join(printable(t.name) for t in (*m.parameters, *m.buffers))
        if own:
            _row(rows, "own", Text(own))
        if m.children:
            names = [printable(c.rpartition(".")[2]) for c in m.children[:8]]
            more = f" … ({format_count(len(m.children))})" if len(m.children) > 8 else ""
            _row(rows, "children", Text(", ".join(names) + more))
        if m.extra_repr:
            _row(rows, "extra_repr", Text(printable_lines(m.extra_repr)))
        if path == "":
            for note in view.notes:
                _row(rows, "note", Text(printable(note), style="italic"))
        parts: list[RenderableType] = [head]
        paused = view.paused
        if paused is not None and paused.module == path:
            parts += hook_sections.paused_section(paused, self._palette)
        broke = view.broke
        if broke is not None and (broke.module or "") == path:
            replay = view.status.replay is not None
            parts += hook_sections.break_section(
                broke, self._palette, view.script_path, replay=replay
            )
        parts += [rows, self._hooks(path)]
        parts += hook_sections.seen_section(
            view.seen.get(path, {}), path, m.type_name, self._palette
        )
        parts += self._findings(path)
        return Group(*parts)

    def _hooks(self, path: str) -> RenderableType:
        """One line: modscope's hooks by spec, the others by function (the hooks pane has
        each with its file:line)."""
        hooks = self.view.hooks.get(path)
        if hooks is None:
            return Text("hooks  …", style="dim")
        if not hooks:
            return Text("hooks  none can fire on this module (h attaches one)", style="dim")
        text = Text(f"hooks ({len(hooks)})  ", style="bold")
        for i, h in enumerate(hooks):
            if i:
                text.append(", ")
            if h.action:
                text.append(printable(h.action), style=self._palette.accent)
            else:
                text.append(f"{h.kind} {printable(h.qualname.rpartition('.')[2])}")
                text.append(f" ({printable(h.owner)})", style="dim")
        return text

    def _unregistered(self, path: str) -> RenderableType:
        u = self.view.unregistered(path)
        if u is None:
            return Text(printable(path))
        head = unregistered_label(u)
        rows = _rows()
        _row(rows, "path", Text(printable(u.path)))
        _row(rows, "type", Text(printable(u.type_name)))
        _row(rows, "held by", Text(printable(f"{u.owner or '(root)'}.{u.attribute}")))
        if u.container:
            _row(rows, "container", Text(f"a plain {printable(u.container)}"))
        if u.shape is not None:
            _row(rows, "shape", Text(format_shape(u.shape)))
        return Group(head, rows, *self._findings(path))

    def _fold(self, ref: NodeRef) -> RenderableType:
        layout = self.view.layout
        assert layout is not None
        m = layout.modules[ref.path]
        first = layout.modules[m.children[ref.start]]
        last = layout.modules[m.children[ref.stop - 1]]
        head = labels.fold_label(first, last, ref.stop - ref.start)
        note = Text(
            "Identical siblings (same structure, same tensor shapes), folded into one "
            "node. Expand it to list them.",
            style="dim",
        )
        return Group(head, note)

    def _findings(self, path: str) -> list[RenderableType]:
        found: list[Finding] = self.view.findings_at.get(path, [])
        if not found:
            return []
        out: list[RenderableType] = [Text("findings", style="bold")]
        out += [labels.finding_text(f) for f in found]
        return out


def _rows() -> Table:
    table = Table.grid(padding=(0, 1))
    table.add_column(style="dim", no_wrap=True, width=KEY_WIDTH)
    table.add_column(overflow="fold")
    return table


def _row(table: Table, key: str, value: Text) -> None:
    table.add_row(key, value)
