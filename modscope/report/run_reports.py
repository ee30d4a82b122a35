"""What `modscope run` writes as the run goes: JSON lines (`--json`) or readable tables."""

from __future__ import annotations

from collections import Counter

from rich.console import Console
from rich.table import Table
from rich.text import Text

from modscope.core.contract.findings import Finding
from modscope.core.contract.fmt import (
    cell_width,
    format_number,
    printable,
    printable_lines,
    summary_line,
    wrap_path,
)
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import BreakEvent, HookEvent, StepRecord, UserError
from modscope.core.session import Session
from modscope.report.breaks import break_paragraph
from modscope.report.check_command import findings_report
from modscope.report.common import print_error, write_json_line
from modscope.report.layers_table import TREND_WIDTH, print_layers
from modscope.report.progress import StepProgress
from modscope.report.step_json import write_step

LOSS_WIDTH = 10
CHANGE_WIDTH = 48
"""At most this many cells for the `largest change` column (a longer key is cut with `…`)."""
KEY_MAX_WIDTH = 48
"""The state table's key column takes up to this many cells, as long as each summary column
keeps 16; a longer key is broken after a dot onto more lines (never cut with `…`)."""


class JsonReport:
    """JSON lines on stdout, one per event, flushed as they happen."""

    def hook(self, event: HookEvent) -> None:
        write_json_line(event.to_json())

    def step(self, record: StepRecord) -> None:
        write_step(record)

    def layers(self, step: LayerStep) -> None:
        write_json_line(step.to_json())

    def finding(self, finding: Finding) -> None:
        write_json_line({"event": "finding", "step": finding.step, **finding.to_json()})

    def error(self, error: UserError, show_traceback: bool) -> None:
        write_json_line(error.to_json())
        print_error(error, show_traceback=show_traceback)

    def broke(self, event: BreakEvent) -> None:
        write_json_line(event.to_json())

    def close(self) -> None:
        pass


class TableReport:
    """Readable output on stdout: a row per step as it completes, then the last `state_dict`,
    the hooks fired and the findings."""

    def __init__(self, session: Session, steps: int, progress: StepProgress) -> None:
        self.session = session
        self.console = Console(highlight=False)
        self.progress = progress
        self.fired: Counter[tuple[str, str, str]] = Counter()
        self.last_event: dict[tuple[str, str, str], HookEvent] = {}
        self.findings: list[Finding] = []
        self.last: StepRecord | None = None
        self.notes_shown = False
        self.step_width = max(4, len(str(steps)))
        self.change_width = 0
        self.layer_steps: list[LayerStep] = []

    def hook(self, event: HookEvent) -> None:
        key = (event.module or "(root)", event.kind.value, event.action.value)
        self.fired[key] += 1
        self.last_event[key] = event

    def step(self, record: StepRecord) -> None:
        console = self.progress.console_for(self.console)
        if self.last is None:
            longest = max((cell_width(printable(k)) for k in record.state), default=0)
            self.change_width = min(CHANGE_WIDTH, max(len("largest change"), longest + 12))
            self._print_notes(console)
            console.print(Text("Iterations", style="bold"))
            console.print(self._header(), soft_wrap=True)
        console.print(self._row(record), soft_wrap=True)
        self.last = record
        self.progress.advance(record)

    def layers(self, step: LayerStep) -> None:
        """Kept for the table after the rows: the last step's modules, with a trend."""
        self.layer_steps = [*self.layer_steps[-(TREND_WIDTH - 1) :], step]

    def finding(self, finding: Finding) -> None:
        self.findings.append(finding)

    def error(self, error: UserError, show_traceback: bool) -> None:
        self.close()
        print_error(error, show_traceback=show_traceback)

    def broke(self, event: BreakEvent) -> None:
        """What completed, then the break, last."""
        self.close()
        self.console.print(break_paragraph(event), soft_wrap=True)

    def close(self) -> None:
        """The summary after the rows: the state after the last step, hooks fired, findings."""
        self.progress.stop()
        c = self.console
        self._print_notes(c)
        if self.last is not None:
            c.print(self._state_table(self.last))
        if self.layer_steps:
            print_layers(c, self.layer_steps)
        if self.fired:
            c.print(self._hooks_table())
        if self.findings:
            c.print(findings_report(self.findings, title="Findings"))
        self.last = None
        self.findings = []
        self.layer_steps = []
        self.fired.clear()

    def _print_notes(self, console: Console) -> None:
        # Printed once the first step has run: whether the output is the loss is known then.
        if self.notes_shown:
            return
        self.notes_shown = True
        for note in self.session.notes():
            console.print(Text(printable_lines(note), style="dim"))

    def _header(self) -> Text:
        return Text(
            f"{'step':>{self.step_width}}  {'mode':<5}  {'loss':>{LOSS_WIDTH}}  changed  "
            f"{'largest change':<{self.change_width}}  output",
            style="bold",
        )

    def _row(self, r: StepRecord) -> Text:
        loss = format_number(r.loss) if r.loss is not None else "-"
        text = Text(f"{r.step:>{self.step_width}}  {r.mode:<5}  {loss:>{LOSS_WIDTH}}  ")
        text.append(f"{len(r.diff.changed):>7}  ")
        top = r.diff.largest_change()  # integer counters never win
        if top is None:
            change = "-"
        else:
            delta = f" Δ{format_number(top[1])}"
            key = printable(top[0], limit=max(1, self.change_width - len(delta)))
            change = key + delta
        text.append(change + " " * max(0, self.change_width - cell_width(change)) + "  ")
        text.append(summary_line(r.output) if r.output else "-")
        return text

    def _state_table(self, record: StepRecord) -> Table:
        table = Table(title=f"state_dict after step {record.step}", title_justify="left")
        keys = list(record.state)
        # The key is what a person reads the row by: the summaries wrap before it is cut, and
        # a key too long even for that is broken after a dot instead of losing its end.
        longest = max((len(printable(k)) for k in keys[:50]), default=3)
        # Borders and padding of four columns (13 cells), the Δ column (11), 16 for each summary.
        room = self.console.width - 13 - 11 - 2 * 16
        key_width = max(12, min(longest, KEY_MAX_WIDTH, room))
        table.add_column("key", overflow="fold", width=key_width)
        table.add_column("value")
        table.add_column("grad")
        table.add_column("Δ last step", justify="right")
        sampled = set(record.diff.sampled)
        for key in keys[:50]:
            grad = record.grads.get(key)
            delta = record.diff.max_abs_delta.get(key)
            table.add_row(
                Text(
                    wrap_path(printable(key), key_width),
                    style="bold" if key in record.diff.changed else "",
                ),
                Text(summary_line(record.state[key])),
                Text(summary_line(grad)) if grad else Text("-" if key in record.grads else ""),
                ("≈" if key in sampled else "") + format_number(delta) if delta is not None else "",
            )
        if len(keys) > 50:
            table.caption = f"showing 50 of {len(keys)} keys (--json has them all)"
        if sampled:
            note = "≈: past --memory-budget, Δ from a sample (changed or not is exact)"
            table.caption = f"{table.caption}; {note}" if table.caption else note
        return table

    def _hooks_table(self) -> Table:
        table = Table(title="Hooks fired", title_justify="left")
        for name in ("module", "kind", "action", "fired", "last seen"):
            table.add_column(name)
        for key, count in self.fired.items():
            event = self.last_event[key]
            seen = event.output or event.grad_input or event.grad_output or event.args or ()
            first = next((s for s in seen if s is not None), None)
            table.add_row(
                Text(printable(key[0])),
                key[1],
                key[2],
                str(count),
                Text(summary_line(first)) if first else Text("-"),
            )
        return table
