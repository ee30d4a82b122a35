"""The hooks pane: every hook that can fire on the selected module, whoever registered it."""

from __future__ import annotations

from typing import ClassVar

from rich.text import Text
from textual.binding import Binding, BindingType
from textual.reactive import var
from textual.widgets.option_list import Option

from modscope.core.contract.fmt import printable
from modscope.core.contract.hook_notes import BREAK_WATCH
from modscope.core.contract.hook_spec import HookInfo
from modscope.report.labels import shown_path
from modscope.tui import labels
from modscope.tui.option_list import OptionList

OWNER_WORDS = {
    "modscope": "modscope",
    "script": "the script",
    "torch": "torch",
    "global": "global (every module)",
    "other": "another library",
}


class HooksPane(OptionList):
    """A `list_hooks` snapshot of one module: kind, action, flags, function and file:line.

    The app's `x` detaches the highlighted hook; `h` attaches a new one.
    """

    BORDER_TITLE = "Hooks"
    HELP = (
        "Every hook that can fire on the selected module: modscope's, the script's, other "
        "libraries', the global module hooks and post-accumulate-grad hooks on its parameters. "
        "h attaches one; x detaches the highlighted one (asking first for one modscope did not "
        "add)."
    )

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("j", "cursor_down", "Down", show=False),
        Binding("k", "cursor_up", "Up", show=False),
    ]

    path: var[str | None] = var(None, bindings=True)
    """The module whose hooks are listed (None: no module selected), the one `h` attaches to."""
    hooks: var[tuple[HookInfo, ...] | None] = var(None, bindings=True)
    """The hooks listed (None: not listed yet); whether one is highlighted for `x` follows."""

    def __init__(self, script: str, *, id: str | None = None) -> None:
        super().__init__(id=id)
        self.script = script
        self._shown: tuple[str | None, tuple[HookInfo, ...] | None, str] | None = None

    def on_mount(self) -> None:
        self.show(None, None)

    def show(self, path: str | None, hooks: tuple[HookInfo, ...] | None, name: str = "") -> None:
        """Show the hooks of the module at `path` (None: no module selected; hooks None:
        not listed yet). `name` is how the module is called (the model's name for the root)."""
        if self._shown == (path, hooks, name):
            return
        self._shown = (path, hooks, name)
        before = self.selected
        self.path, self.hooks = path, hooks
        shown_name = shown_path(name or (path or "(root)"))
        self.clear_options()
        if path is None:
            self.add_option(
                Option(Text("Select a module in the tree.", style="dim"), disabled=True)
            )
        elif hooks is None:
            self.add_option(Option(Text("listing…", style="dim"), disabled=True))
        elif not hooks:
            text = Text(f"No hook can fire on {shown_name}. ", style="dim")
            text.append("h attaches one.", style="dim italic")
            self.add_option(Option(text, disabled=True))
        else:
            self.add_options(Option(hook_text(h, self.script)) for h in hooks)
            ids = [h.hook_id for h in hooks]
            self.highlighted = ids.index(before.hook_id) if before and before.hook_id in ids else 0
        title = Text("Hooks")
        if path is not None:
            title.append(" on ")
            title.append(shown_name)
            if hooks:
                title.append(f" ({len(hooks)})")
        self.border_title = title

    @property
    def selected(self) -> HookInfo | None:
        """The highlighted hook, or None."""
        i = self.highlighted
        if not self.hooks or i is None or not 0 <= i < len(self.hooks):
            return None
        return self.hooks[i]


def hook_text(h: HookInfo, script: str) -> Text:
    """`forward  scale=2  modscope  [with_kwargs]` over `qualname  file:line` (for modscope's
    own hooks, over the spec)."""
    text = Text()
    ours = h.owner == "modscope"
    text.append(h.kind, style="bold magenta" if ours else "bold")
    if h.target:
        text.append(" on ")
        text.append(shown_path(h.target))
    text.append("  ")
    if h.action:
        # The spec's MODULE and KIND are the pane's module and this row's kind already.
        text.append(printable(h.action.rpartition(":")[2]), style="magenta")
    owner = OWNER_WORDS.get(h.owner) or printable(h.owner)
    text.append(f"  {owner}", style="dim" if ours else "yellow")
    if h.flags:
        text.append(f"  [{printable(', '.join(h.flags))}]", style="dim")
    text.append("\n  ")
    if ours:
        # modscope's own function and line say nothing to the user.
        text.append(_own_hook_hint(h), style="dim")
        return text
    text.append(printable(h.qualname))
    text.append("  ")
    text.append(printable(labels.display_location(h.location, script)), style="dim")
    return text


def _own_hook_hint(h: HookInfo) -> str:
    """How one of modscope's own hooks goes away: `x` for an attached one, `b` for a break
    condition's watch; the layers view's statistics stay while the session lasts."""
    if h.hook_id.is_modscope:
        return "x detaches it"
    if h.action == BREAK_WATCH:
        return "b removes its condition"
    return "the layers view's statistics (l), kept while the session lasts"
