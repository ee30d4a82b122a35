"""The findings pane: what the doctor (or the inventory) found; `enter` jumps to the node."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.message import Message
from textual.widgets.option_list import Option

from modscope.core.contract.findings import Finding
from modscope.tui import labels
from modscope.tui.option_list import OptionList


class FindingsPane(OptionList):
    """A list of findings, worst first."""

    BORDER_TITLE = "Findings"
    HELP = "Pitfalls found in the model; enter jumps to the node."

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
        Binding("enter", "select", "Go to node", id="goto_finding"),
    ]

    class GoTo(Message):
        """Jump to the tree node of a finding."""

        def __init__(self, finding: Finding) -> None:
            super().__init__()
            self.finding = finding

    def __init__(self, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.findings: tuple[Finding, ...] = ()
        self._shown: tuple[Finding, ...] | None = None

    def on_mount(self) -> None:
        self.show(())

    def show(self, findings: tuple[Finding, ...]) -> None:
        if self._shown == findings:
            return
        self._shown = findings
        self.findings = findings
        highlighted = self.highlighted
        self.clear_options()
        if not findings:
            self.add_option(Option(Text("No findings.", style="dim"), disabled=True))
        else:
            self.add_options(Option(labels.finding_text(f)) for f in findings)
            self.highlighted = min(highlighted or 0, len(findings) - 1)
        self.border_title = Text(f"Findings ({len(findings)})")

    def on_option_list_option_selected(self, event: OptionList.OptionSelected) -> None:
        event.stop()
        if 0 <= event.option_index < len(self.findings):
            self.post_message(self.GoTo(self.findings[event.option_index]))
