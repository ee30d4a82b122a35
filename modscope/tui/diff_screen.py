"""The `state_dict` diff view: every key before and after the last step, changed ones first."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.reactive import var
from textual.screen import ModalScreen
from textual.theme import Theme
from textual.widgets import DataTable, Footer, Static

from modscope.core.fmt import format_count, format_number, summary_line
from modscope.report.labels import shown_path
from modscope.tui.hook_sections import Palette
from modscope.tui.model_view import ModelView

ROW_LIMIT = 2000
"""At most this many keys are listed ("showing N of M" in the title)."""

NUMBER_WIDTH = 11
"""The widest cell of the two number columns ("rel. change", `-1.2346e+05`)."""


class DiffScreen(ModalScreen[None]):
    """What the last iteration changed in the `state_dict`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q,escape", "dismiss", "Close", id="close_diff"),
        Binding("d", "dismiss", "Close", show=False),
        Binding("u", "toggle_unchanged", "Hide/show unchanged", id="toggle_unchanged"),
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    DEFAULT_CSS = """
    DiffScreen {
        align: center middle;
    }
    DiffScreen > Vertical {
        width: 96%;
        height: 92%;
        border: round $accent;
        background: $surface;
    }
    DiffScreen #diff-caption {
        height: auto;
        padding: 0 1;
    }
    DiffScreen DataTable {
        height: 1fr;
    }
    """

    show_unchanged = var(True, init=False)
    """Whether unchanged keys are listed (`u` toggles)."""

    def __init__(self, view: ModelView) -> None:
        super().__init__()
        self.view = view

    def compose(self) -> ComposeResult:
        with Vertical():
            yield Static(id="diff-caption")
            yield DataTable(id="diff-table", zebra_stripes=True, cursor_type="row")
        yield Footer()

    def on_mount(self) -> None:
        table = self.query_one(DataTable)
        for label in ("key", "before", "after", "max |Δ|", "rel. change"):
            table.add_column(label, key=label)
        self._fill()
        table.focus()
        self.app.theme_changed_signal.subscribe(self, self._theme_changed)

    def _theme_changed(self, _: Theme) -> None:
        self._fill()

    def watch_show_unchanged(self) -> None:
        self._fill()

    def action_toggle_unchanged(self) -> None:
        self.show_unchanged = not self.show_unchanged

    def action_cursor_down(self) -> None:
        self.query_one(DataTable).action_cursor_down()

    def action_cursor_up(self) -> None:
        self.query_one(DataTable).action_cursor_up()

    def rows(self) -> list[tuple[str, bool]]:
        """The keys listed, in order, each with whether it changed."""
        record = self.view.last_record
        if record is None:
            return []
        diff = record.diff
        changed = [(k, True) for k in (*diff.changed, *diff.added)]
        if not self.show_unchanged:
            return changed
        return changed + [(k, False) for k in diff.unchanged] + [(k, True) for k in diff.removed]

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear()
        record = self.view.last_record
        caption = self.query_one("#diff-caption", Static)
        self.query_one(Vertical).border_title = Text("state_dict diff")
        if record is None:
            caption.update(Content.styled("No step yet: press s to run one iteration.", "dim"))
            return
        diff = record.diff
        rows = self.rows()
        total = len(diff.changed) + len(diff.unchanged) + len(diff.added) + len(diff.removed)
        before = f"step {record.step - 1}" if record.step > 1 else "the start"
        parts: list[tuple[str, str] | str] = [
            (f"after step {record.step}", "bold"),
            f" vs {before}: ",
            (f"{format_count(len(diff.changed))} changed", "bold $text-warning"),
            f", {format_count(len(diff.unchanged))} unchanged",
        ]
        if diff.added or diff.removed:
            parts.append((f", {len(diff.added)} added, {len(diff.removed)} removed", "$text-error"))
        if diff.sampled:
            parts.append(
                (
                    f"  ≈ {format_count(len(diff.sampled))} past the memory budget: changed or "
                    "not exact (a digest), max |Δ| and rel. change from a sample",
                    "dim",
                )
            )
        if not self.show_unchanged:
            parts.append(("  (unchanged hidden: u shows them)", "dim"))
        if len(rows) > ROW_LIMIT:
            shown = f"  showing {format_count(ROW_LIMIT)} of {format_count(len(rows))}"
            parts.append((shown, "dim"))
        elif len(rows) < total:
            parts.append((f"  showing {format_count(len(rows))} of {format_count(total)}", "dim"))
        caption.update(Content.assemble(*parts))
        # DataTable cells are Rich renderables: they take the theme's colours, not `$variables`.
        warning = Palette.of(self.app.theme_variables).warning
        key_width, summary_width = cell_widths(
            self.app.size.width, max((len(shown_path(k)) for k, _ in rows[:ROW_LIMIT]), default=3)
        )
        sampled = set(diff.sampled)
        for key, changed in rows[:ROW_LIMIT]:
            style = f"bold {warning}" if changed else "dim"
            before = self.view.before(key)
            after = record.state.get(key)
            delta = diff.max_abs_delta.get(key)
            rel = diff.rel_change.get(key)
            old = summary_line(before) if before else "?" if key not in diff.added else "(added)"
            about = "≈" if key in sampled else ""
            table.add_row(
                cell(shown_path(key), key_width, style),
                cell(old, summary_width, "" if changed else "dim"),
                cell(summary_line(after) if after else "(removed)", summary_width, style),
                Text(about + (format_number(delta) if changed else "0"), style, justify="right"),
                Text(about + (_percent(rel, delta) if changed else "0"), style, justify="right"),
                key=key,
            )

    def on_resize(self) -> None:
        if self.query_one(DataTable).columns:  # after on_mount added them
            self._fill()


def cell_widths(screen_width: int, longest_key: int) -> tuple[int, int]:
    """(key, summary) cell widths that keep all five columns on a screen this wide: the view
    takes 96% of it, less its border, and each column has a cell of padding on either side."""
    room = int(screen_width * 0.96) - 2 - 5 * 2 - 2 * NUMBER_WIDTH
    key = min(longest_key, max(12, room // 3))
    return key, max(12, (room - key) // 2)


def cell(text: str, width: int, style: str) -> Text:
    """A one-line cell of at most `width` cells, cut with an ellipsis: a long summary must not
    widen its column and push the others off screen."""
    out = Text(text, style=style, no_wrap=True, overflow="ellipsis")
    out.truncate(width, overflow="ellipsis")
    return out


def _percent(rel: float | None, delta: float | None) -> str:
    """The relative change; "from 0" for a tensor that was all zeros (no ratio to give)."""
    if rel is None:
        return "from 0" if delta is not None else "?"
    return f"{rel * 100:.2f}%" if rel * 100 >= 0.01 else f"{rel:.2e}"
