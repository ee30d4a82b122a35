"""The progress bar of a long headless run, on stderr: step N/M, steps/s, loss, time left."""

from __future__ import annotations

from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    ProgressColumn,
    Task,
    TextColumn,
    TimeRemainingColumn,
)
from rich.text import Text

from modscope.core.contract.fmt import format_number
from modscope.core.contract.steps import StepRecord
from modscope.report.common import ScriptPrints


class _RateColumn(ProgressColumn):
    """`12.5 steps/s` (or `s/step` when slower than one a second)."""

    def render(self, task: Task) -> Text:
        speed = task.finished_speed or task.speed
        if not speed:
            return Text("- steps/s", style="dim")
        if speed < 1:
            return Text(f"{1 / speed:.1f} s/step", style="dim")
        return Text(f"{speed:.1f} steps/s", style="dim")


class StepProgress:
    """The bar on stderr while a run of several steps goes: step N/M, steps/s, loss, time left.

    Shown only when stderr is a terminal and there is more than one step; it disappears when
    the run ends. While it shows, the script's prints go through its console (`ScriptPrints`),
    and so do the rows when stdout is the terminal too (as rich's own stdout redirection does),
    so the bar is redrawn below them instead of being torn.
    """

    def __init__(self, steps: int, prints: ScriptPrints, console: Console | None = None) -> None:
        self.prints = prints
        console = console or Console(stderr=True, highlight=False)
        self.progress: Progress | None = None
        if steps > 1 and console.is_terminal:
            self.progress = Progress(
                TextColumn("step"),
                MofNCompleteColumn(),
                BarColumn(),
                _RateColumn(),
                TextColumn("loss {task.fields[loss]}"),
                TimeRemainingColumn(),
                console=console,
                transient=True,
                redirect_stdout=False,
            )
            self.task = self.progress.add_task("run", total=steps, loss="-")

    def __enter__(self) -> StepProgress:
        if self.progress is not None:
            self.progress.start()
            self.prints.console = self.progress.console
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        """Take the bar away (idempotent): before anything is printed after the run."""
        if self.progress is not None:
            self.prints.console = None
            self.progress.stop()
            self.progress = None

    def advance(self, record: StepRecord) -> None:
        if self.progress is not None:
            loss = format_number(record.loss) if record.loss is not None else "-"
            self.progress.update(self.task, advance=1, loss=loss)

    def console_for(self, console: Console) -> Console:
        """Where a line meant for `console` (stdout) goes now: the bar's console while the bar
        shows on the same terminal."""
        if self.progress is not None and console.is_terminal:
            return self.progress.console
        return console
