"""One-line rich Texts for tree nodes, findings, errors and the status line.

Every untrusted string (module names, paths, reprs, messages) passes through `printable` (an
ESC or a newline in a name shows as `\\x1b`, `\\n`) and is appended as plain text to a
`rich.text.Text`, never parsed as markup: `blocks[attn]` and `x[/y]` show as typed. The marks
follow `modscope tree`: ◆ parameter, ◇ buffer, ✗ not registered.
"""

from __future__ import annotations

import os

from rich.text import Text

from modscope.control.updates import SessionStatus
from modscope.core.contract.findings import Finding, Severity
from modscope.core.contract.fmt import (
    format_count,
    format_number,
    format_shape,
    printable,
    summary_line,
)
from modscope.core.contract.steps import HookEvent, UserError
from modscope.core.contract.tensors import TensorInfo, TensorSummary
from modscope.core.contract.tree import ModuleInfo
from modscope.report.labels import append_tensor_marks, plural, shown_name, shown_path
from modscope.report.labels import error_text as shared_error_text
from modscope.report.labels import module_label as tree_module_label
from modscope.report.styles import SEVERITY_MARK, SEVERITY_STYLE

SHARED_SHOWN = 2


def display_path(file: str | None, script: str | None = None) -> str:
    """A file as a person wants to read it: the script by its name, files beside it relative
    to its folder, anything else as it is."""
    if not file:
        return "?"
    if script:
        base = os.path.dirname(os.path.abspath(script))
        full = os.path.abspath(file)
        if full.startswith(base + os.sep):
            return os.path.relpath(full, base)
    return file


def display_location(location: str | None, script: str | None = None) -> str:
    """`file:line` with the file shown by `display_path`, or by its name when it lies outside
    the script's folder (site-packages paths differ from machine to machine)."""
    if not location:
        return "?"
    file, _, line = location.rpartition(":")
    if not file or not line.isdigit():
        file, line = location, ""
    shown = display_path(file, script)
    if os.path.isabs(shown):
        shown = os.path.basename(shown)
    return f"{shown}:{line}" if line else shown


def badge(text: Text, findings: list[Finding] | None, below: Severity | None = None) -> None:
    """Append a finding badge: `●2` in the worst severity's colour; `○` when only below."""
    if findings:
        worst = min((f.severity for f in findings), key=lambda s: s.rank)
        text.append(f"  ●{len(findings)}", style=SEVERITY_STYLE[worst])
    elif below is not None:
        text.append("  ○", style=SEVERITY_STYLE[below])


def module_label(m: ModuleInfo, *, name: str | None = None, hooks: int = 0) -> Text:
    """The headless tree's module label, with the number of hooks that can fire on it."""
    text = tree_module_label(m, name=name)
    if hooks:
        text.append(f"  ⚓{hooks}", style="magenta")
    return text


def tensor_label(
    t: TensorInfo,
    summary: TensorSummary | None,
    grad: TensorSummary | None,
    *,
    changed: bool = False,
    sampled: bool = False,
) -> Text:
    """`◆ powParam tensor 1.1034  ∇ 10.3434` with its marks; highlighted when it just changed;
    `≈` when its change was measured on a sample (past the memory budget)."""
    text = Text()
    text.append("◆ " if t.is_parameter else "◇ ", style="cyan" if t.is_parameter else "magenta")
    text.append(shown_name(t.name), style="bold")
    text.append(" ")
    if summary is not None:
        text.append(summary_line(summary), style="bold yellow" if changed else "")
        if summary.nan or summary.inf:
            text.stylize("bold red", len(text) - len(summary_line(summary)))
    else:
        words = "tensor" + (format_shape(t.shape) if t.shape else "")
        if len(t.shape) > 1 or (t.shape and t.numel > 8):
            words += f" n={format_count(t.numel)}"
        text.append(words, style="dim")
    if changed:
        text.append(" Δ", style="bold yellow")
    if sampled:
        text.append(" ≈" if not changed else "≈", style="yellow" if changed else "dim")
    if grad is not None:
        text.append("  ∇ ", style="dim")
        text.append(
            format_number(grad.norm), style="green" if not (grad.nan or grad.inf) else "bold red"
        )
    append_tensor_marks(text, t, sep="  ", shared_shown=SHARED_SHOWN)
    if t.note:
        text.append(f"  {printable(t.note)}", style="dim")
    return text


def fold_label(first: ModuleInfo, last: ModuleInfo, count: int) -> Text:
    """`0-3299: 3,300 × Block  12 params each`, like `modscope tree`'s folded runs."""
    text = Text()
    text.append(f"{shown_name(first.name)}-{shown_name(last.name)}", style="bold")
    text.append(f": {format_count(count)} × {shown_name(first.type_name)}")
    text.append(f"  {plural(first.totals.parameters, 'param')} each", style="dim")
    return text


def more_label(remaining: int) -> Text:
    return Text(f"… {format_count(remaining)} more (enter shows the next ones)", style="dim italic")


def finding_text(f: Finding) -> Text:
    text = Text()
    text.append(f"{SEVERITY_MARK[f.severity]} ", style=SEVERITY_STYLE[f.severity])
    text.append(f.kind.value, style=SEVERITY_STYLE[f.severity])
    text.append("  ")
    text.append(shown_path(f.path) if f.path else "(model)", style="bold")
    if f.step:
        text.append(f"  step {f.step}", style="dim")
    text.append("\n  ")
    text.append(printable(f.message))
    if f.fix:
        text.append("\n  fix: ", style="dim")
        text.append(printable(f.fix), style="dim")
    return text


def error_text(error: UserError, script: str | None = None, *, traceback: bool = False) -> Text:
    """The headless error text, with the file shown relative to the script."""
    return shared_error_text(error, file=display_path(error.file, script), traceback=traceback)


def status_text(status: SessionStatus) -> Text:
    """`powlog.py │ step 3 │ next forward │ train │ loss 1.5248 │ out tensor 8.7652 │ paused`."""
    sep = (" │ ", "dim")
    text = Text(no_wrap=True, overflow="ellipsis")
    text.append(printable(status.script), style="bold")
    if not status.loaded:
        text.append_text(
            Text.assemble(sep, ("loading…" if status.busy else "not loaded", "yellow"))
        )
        return text
    if status.paused_at:
        # First after the script's name: on a narrow terminal the rest is cut, not this.
        pause = f"paused in {shown_path(status.paused_at)} · c continues"
        if status.replay is not None:  # where the recorded run stopped: nothing to continue
            pause = f"stopped at {shown_path(status.paused_at)}"
        text.append_text(Text.assemble(sep, (pause, "bold magenta")))
    if status.replay is not None:
        # A replay says so first, and where in the recording it stands.
        text.append_text(Text.assemble(sep, ("replay", "bold cyan")))
        of = (f" of {status.last_step}", "dim")
        text.append_text(Text.assemble(sep, ("step ", "dim"), (str(status.step), "bold"), of))
        if status.rank is not None:
            rank = (f"rank {status.rank} of {status.ranks}", "bold cyan")
            text.append_text(Text.assemble(sep, rank, (" ([ ] switch)", "dim")))
    else:
        text.append_text(Text.assemble(sep, ("step ", "dim"), (str(status.step), "bold")))
        if status.fork is not None:
            what_if = (f"what if from step {status.fork}", "bold yellow")
            text.append_text(Text.assemble(sep, what_if, (" (d t compares)", "dim")))
    if status.next_phase is not None and len(status.phases) > 1:
        label = "next " if not status.in_iteration else "in iteration, next "
        if status.paused_at:
            label = "in "  # the pending phase is the one the pause holds
        text.append_text(Text.assemble(sep, (label, "dim"), status.next_phase.value))
    text.append_text(
        Text.assemble(sep, ("train", "green") if status.training else ("eval", "bold yellow"))
    )
    if status.last_loss is not None:
        loss = format_number(status.last_loss)
        bad = loss in ("nan", "inf", "-inf")
        text.append_text(Text.assemble(sep, ("loss ", "dim"), (loss, "bold red" if bad else "")))
    if status.last_output is not None:
        text.append_text(Text.assemble(sep, ("out ", "dim"), summary_line(status.last_output)))
    if not status.paused_at:  # a pause is shown first, above
        if status.running:
            state = ("▶ running", "bold green")
        elif status.busy:
            state = ("running…", "green")
        else:
            state = ("idle", "dim")
        text.append_text(Text.assemble(sep, state))
    if status.queued:
        text.append_text(Text.assemble(sep, (f"queued {status.queued}", "bold cyan")))
    for tag in status.tags:
        text.append_text(Text.assemble(sep, (printable(tag), "italic")))
    if status.hooks:
        text.append_text(Text.assemble(sep, (plural(status.hooks, "hook"), "magenta")))
    if status.breaks:
        armed = printable(", ".join(status.breaks), limit=40)
        text.append_text(Text.assemble(sep, ("break ", "dim"), (armed, "bold red")))
    return text


def hook_event_text(e: HookEvent) -> Text:
    """`step 1 forward  logModel forward-pre scale  args: tensor 125.0000`."""
    text = Text()
    text.append(f"step {e.step} {e.phase.value}  ", style="dim")
    text.append(shown_path(e.module) if e.module else "(root)", style="bold magenta")
    text.append(f" {e.kind.value}")
    if e.action.value != "observe":
        text.append(f" {e.action.value}", style="magenta")
    if e.count > 1:
        text.append(f" ×{e.count}", style="dim")
    for name in ("args", "output", "grad_input", "grad_output"):
        values = getattr(e, name)
        if values is None:
            continue
        shown = ", ".join(summary_line(s) if s is not None else "None" for s in values[:3])
        more = f", … {len(values) - 3} more" if len(values) > 3 else ""
        text.append(f"  {name}: ", style="dim")
        text.append(f"({shown}{more})")
    if e.note:
        text.append(f"  [{printable(e.note)}]", style="dim italic")
    return text
