"""The `state_dict` diff view: every key before and after the last step, changed ones first;
after a rewind, `t` compares this timeline's last step with the original timeline's ("what if")."""

from __future__ import annotations

from typing import ClassVar

from rich.cells import cell_len
from rich.text import Text
from textual.binding import Binding, BindingType
from textual.containers import Vertical
from textual.content import Content
from textual.message import Message
from textual.reactive import var
from textual.widgets import DataTable, Static

from modscope.control.updates import TimelinesCompared
from modscope.core.contract.fmt import format_count, format_number, summary_line
from modscope.core.contract.steps import StateDiff
from modscope.core.contract.tensors import TensorSummary
from modscope.report.labels import shown_path
from modscope.tui.hook_sections import Palette
from modscope.tui.model_view import ModelView
from modscope.tui.table_screen import TableScreen, cell

ROW_LIMIT = 2000
"""At most this many keys are listed ("showing N of M" in the title)."""

COLUMNS = ("key", "before", "after", "max |Δ|", "rel. change")
COMPARED_COLUMNS = ("key", "original", "this timeline", "max |Δ|", "rel. diff.")
"""The column labels when comparing with the original timeline (`t`)."""

NUMBER_WIDTH = 11
"""The widest cell of the two number columns ("rel. change", `-1.2346e+05`)."""


class DiffScreen(TableScreen[None]):
    """What the last iteration changed in the `state_dict`."""

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "close", "Close", id="close_diff"),
        Binding("d", "close", "Close", show=False),
        Binding("u", "toggle_unchanged", "Hide/show unchanged", id="toggle_unchanged"),
        Binding("t", "toggle_timelines", "Original timeline", id="compare_timelines"),
    ]

    NAME = "diff"
    HELP_TITLE = "Diff"
    HELP = (
        "What the last iteration changed in the state_dict: each key's value before and "
        "after, the largest |Δ| and ‖Δ‖/‖before‖; ≈ marks a key past the memory budget "
        "(a digest and a sample). After a rewind, t compares this timeline with the original "
        "one at the same step."
    )

    show_unchanged = var(True, init=False)
    """Whether unchanged keys are listed (`u` toggles)."""
    against_original = var(False, init=False)
    """Whether the view compares with the original timeline (`t` toggles) instead of the step
    before."""

    class ComparisonWanted(Message):
        """The view wants this timeline compared with the original (`CompareTimelines`)."""

    def __init__(self, view: ModelView) -> None:
        super().__init__()
        self.view = view
        self.comparison: TimelinesCompared | None = None
        """The controller's last answer, while `against_original`."""

    def watch_show_unchanged(self) -> None:
        self._fill()

    def action_toggle_unchanged(self) -> None:
        self.show_unchanged = not self.show_unchanged

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        if action == "toggle_timelines":
            return self.view.status.fork is not None  # shown once a rewind left a timeline
        return True

    def action_toggle_timelines(self) -> None:
        self.against_original = not self.against_original

    def watch_against_original(self, against: bool) -> None:
        self.comparison = None
        if against:
            self.post_message(self.ComparisonWanted())
        self._fill()

    def show_comparison(self, answer: TimelinesCompared) -> None:
        """The controller's answer to `ComparisonWanted`."""
        if self.against_original:
            self.comparison = answer
            self._fill()

    def rows(self) -> list[tuple[str, bool]]:
        """The keys listed, in order, each with whether it changed."""
        diff = self._diff()
        if diff is None:
            return []
        changed = [(k, True) for k in (*diff.changed, *diff.added)]
        if not self.show_unchanged:
            return changed
        return changed + [(k, False) for k in diff.unchanged] + [(k, True) for k in diff.removed]

    def _diff(self) -> StateDiff | None:
        """The diff listed: the last step's, or this timeline's against the original's."""
        if self.against_original:
            answer = self.comparison
            return answer.comparison.diff if answer and answer.comparison else None
        record = self.view.last_record
        return record.diff if record is not None else None

    def _columns(self, key: str) -> tuple[TensorSummary | None, TensorSummary | None]:
        """A key's summaries in the "before" and "after" columns."""
        answer = self.comparison
        if self.against_original and answer is not None and answer.comparison is not None:
            return answer.comparison.theirs.get(key), answer.comparison.ours.get(key)
        record = self.view.last_record
        return self.view.before(key), record.state.get(key) if record else None

    def _caption(self, diff: StateDiff) -> list[tuple[str, str] | str]:
        answer = self.comparison
        if self.against_original and answer is not None and answer.comparison is not None:
            c = answer.comparison
            return [
                (f"after step {c.step}", "bold"),
                f", this timeline vs the original (they part after step {c.fork}): ",
                (f"{format_count(len(diff.changed))} differ", "bold $text-warning"),
                f", {format_count(len(diff.unchanged))} identical;",
                f" loss {format_number(c.loss)} vs {format_number(c.original_loss)}",
            ]
        record = self.view.last_record
        assert record is not None
        before = f"step {record.step - 1}" if record.step > 1 else "the start"
        return [
            (f"after step {record.step}", "bold"),
            f" vs {before}: ",
            (f"{format_count(len(diff.changed))} changed", "bold $text-warning"),
            f", {format_count(len(diff.unchanged))} unchanged",
        ]

    def _empty(self) -> Content:
        """What the caption says when there is nothing to list."""
        if not self.against_original:
            return Content.styled("No step yet: press s to run one iteration.", "dim")
        answer = self.comparison
        if answer is None:
            return Content.styled("Comparing with the original timeline…", "dim")
        c = answer.comparison
        why = answer.error or (c.note if c is not None else None) or "nothing to compare"
        return Content.styled(f"{why}.  t: back to the last step's diff", "dim")

    def _fill(self) -> None:
        table = self.query_one(DataTable)
        table.clear(columns=True)
        labels = COMPARED_COLUMNS if self.against_original else COLUMNS
        for key, label in zip(COLUMNS, labels, strict=True):
            table.add_column(label, key=key)
        caption = self.query_one("#diff-caption", Static)
        title = "state_dict: this timeline vs the original" if self.against_original else None
        self.query_one(Vertical).border_title = Text(title or "state_dict diff")
        diff = self._diff()
        if diff is None:
            caption.update(self._empty())
            return
        rows = self.rows()
        total = len(diff.changed) + len(diff.unchanged) + len(diff.added) + len(diff.removed)
        parts = self._caption(diff)
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
        lines = []
        for key, changed in rows[:ROW_LIMIT]:
            before, after = self._columns(key)
            old = summary_line(before) if before else "?" if key not in diff.added else "(added)"
            lines.append((key, changed, old, summary_line(after) if after else "(removed)"))
        key_width, summary_width = cell_widths(
            self.app.size.width,
            max((cell_len(shown_path(k)) for k, *_ in lines), default=3),
            max((cell_len(text) for _, _, *texts in lines for text in texts), default=3),
        )
        sampled = set(diff.sampled)
        for key, changed, old, new in lines:
            style = f"bold {warning}" if changed else "dim"
            delta = diff.max_abs_delta.get(key)
            rel = diff.rel_change.get(key)
            about = "≈" if key in sampled else ""
            table.add_row(
                cell(shown_path(key), key_width, style),
                cell(old, summary_width, "" if changed else "dim"),
                cell(new, summary_width, style),
                Text(about + (format_number(delta) if changed else "0"), style, justify="right"),
                Text(about + (_percent(rel, delta) if changed else "0"), style, justify="right"),
                key=key,
            )

    def on_resize(self) -> None:
        if self.query_one(DataTable).columns:  # after on_mount added them
            self._fill()


def cell_widths(screen_width: int, longest_key: int, longest_summary: int) -> tuple[int, int]:
    """(key, summary) cell widths that keep all five columns on a screen this wide: the view
    takes 96% of it, less its border, and each column has a cell of padding on either side.
    The summaries take what they need up to their share (a third each when keys are long too),
    and the key column takes the rest, so a long key is cut only when the values need the
    room."""
    room = int(screen_width * 0.96) - 2 - 5 * 2 - 2 * NUMBER_WIDTH
    share = max(12, (room - min(longest_key, max(12, room // 3))) // 2)
    summary = max(12, min(longest_summary, share))
    return max(12, min(longest_key, room - 2 * summary)), summary


def _percent(rel: float | None, delta: float | None) -> str:
    """The relative change; "from 0" for a tensor that was all zeros (no ratio to give)."""
    if rel is None:
        return "from 0" if delta is not None else "?"
    return f"{rel * 100:.2f}%" if rel * 100 >= 0.01 else f"{rel:.2e}"
