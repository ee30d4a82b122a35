"""Rich text labels shared by the headless tree and the app (torch-free: rich and snapshots).

Names, reprs and messages come from the user's code: each passes through `printable` (no
terminal control, one line per name) and is appended as plain text, never as markup.
"""

from __future__ import annotations

from rich.text import Text

from modscope.core.contract.fmt import format_count, plural, printable, printable_lines
from modscope.core.contract.steps import UserError
from modscope.core.contract.tensors import TensorInfo
from modscope.core.contract.tree import ModuleInfo, Unregistered

NAME_LIMIT = 60
"""Cells one name (a module's, a tensor's, a class's, one part of a dotted path) may take in a
row; a longer one is cut with "…" (the detail pane shows it whole)."""


def shown_name(name: str) -> str:
    """A name as a row shows it: escaped by `printable`, at most `NAME_LIMIT` cells."""
    return printable(name, limit=NAME_LIMIT)


def shown_path(path: str) -> str:
    """A dotted path as a row shows it: each part as `shown_name` shows it."""
    if len(path) <= NAME_LIMIT and path.isascii() and path.isprintable():
        return path
    return ".".join(shown_name(part) for part in path.split("."))


def module_label(m: ModuleInfo, *, name: str | None = None) -> Text:
    """`powModel PowModel  1 param`, with trainable counts, buffers and `eval` when they matter."""
    text = Text()
    text.append(shown_name(name if name is not None else (m.name or "(root)")), style="bold")
    text.append(f" {shown_name(m.type_name)}", style="dim")
    totals = m.totals
    if totals.parameters:
        text.append(f"  {plural(totals.parameters, 'param')}")
        if totals.trainable != totals.parameters:
            text.append(f" ({format_count(totals.trainable)} trainable)", style="blue")
    if totals.buffers:
        text.append(f"  {format_count(totals.buffers)} in buffers", style="dim")
    if not m.training:
        text.append("  eval", style="yellow")
    return text


def append_tensor_marks(
    text: Text, t: TensorInfo, *, sep: str, shared_shown: int | None = None
) -> None:
    """The marks a parameter or buffer earns: frozen, non-persistent, autograd history (a
    buffer that drags a graph), and the names it is shared with (the first `shared_shown`)."""
    if t.frozen:
        text.append(f"{sep}frozen", style="blue")
    if not t.is_parameter and not t.persistent:
        text.append(f"{sep}non-persistent", style="dim")
    if t.has_grad_fn:
        text.append(f"{sep}carries autograd history!", style="bold red")
    if t.shared_with:
        names = t.shared_with if shared_shown is None else t.shared_with[:shared_shown]
        more = len(t.shared_with) - len(names)
        extra = f" +{more}" if more > 0 else ""
        shown = ", ".join(shown_path(n) for n in names)
        text.append(f"{sep}shared with {shown}{extra}", style="green")


def unregistered_label(u: Unregistered) -> Text:
    """`✗ modelList[0] PowModel  not registered (module, in a plain list)`; a module without
    state loses only the mode and hooks: `! ... (module, in a plain list; stateless, eval()
    misses it)` where its forward depends on the mode, `○ ... (...; stateless)` elsewhere."""
    if u.loses_state:
        mark, style, lost = "✗ ", "red", ""
    elif u.mode_dependent:
        mark, style, lost = "! ", "yellow", "; stateless, eval() misses it"
    else:
        mark, style, lost = "○ ", "dim", "; stateless"
    text = Text()
    text.append(mark, style=f"bold {style}")
    text.append(shown_path(u.path[len(u.owner) + 1 :] if u.owner else u.path), style=style)
    text.append(f" {shown_name(u.type_name)}", style="dim")
    where = f"in a plain {u.container}" if u.container else "a plain attribute"
    text.append(f"  not registered ({u.what}, {where}{lost})", style=style)
    return text


def error_text(error: UserError, *, file: str | None = None, traceback: bool = False) -> Text:
    """Where the user's code failed (file, line, step, phase), what it said, the source line.

    `file` replaces the error's own path in the text (the app shows it relative to the script).
    """
    text = Text()
    if error.internal:  # modscope failed, not the user's code: no file of theirs to name
        text.append("modscope failed", style="bold red")
        text.append(f" (at step {error.step}, {error.phase.value}): ")
        text.append(printable(error.exc_type), style="bold red")
        text.append("\n")
        text.append(printable_lines(error.message))
    else:
        where = printable(file if file is not None else (error.file or "?"))
        if error.line:
            where += f", line {error.line}"
        when = (
            "while loading" if error.step is None else f"at step {error.step}, {error.phase.value}"
        )
        text.append(printable(error.exc_type), style="bold red")
        text.append(f" in {where} ({when})\n")
        text.append(printable_lines(error.message))
        if error.source_line:
            text.append("\n    ")
            text.append(printable(error.source_line.strip()), style="bold")
    if error.hint:
        text.append("\n")
        text.append(printable_lines(error.hint), style="italic")
    if traceback and error.traceback:
        text.append("\n\n")
        text.append(printable_lines(error.traceback.rstrip()), style="dim")
    return text
