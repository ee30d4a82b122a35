"""The app's hook keys: `h` attaches, `x` detaches (asking first for a hook modscope did not
add), and the hooks pane's content; a plain object the app holds and calls."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

from rich.text import Text
from textual.app import App

from modscope.control import commands as cmd
from modscope.core.contract.hook_notes import BREAK_WATCH
from modscope.core.contract.hook_spec import HookSpec
from modscope.core.contract.steps import HookEvent
from modscope.tui.confirm_screen import ConfirmScreen
from modscope.tui.detail_pane import DetailPane
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hooks_pane import OWNER_WORDS, HooksPane, hook_text
from modscope.tui.model_view import ModelView, NodeKind


class HookActions:
    """`h`, `x`, `enter` on a hook event, and the hooks pane of the selected module.

    `app` shows the dialogs and notifications and holds the panes; `submit` sends a command to
    the session thread.
    """

    def __init__(
        self,
        app: App[Any],
        view: ModelView,
        *,
        script: str,
        submit: Callable[[cmd.Command], None],
    ) -> None:
        self.app = app
        self.view = view
        self.script = script
        self.submit = submit

    def target(self) -> str | None:
        """The module `h` attaches to and the hooks pane lists: the selected module, or the
        module of the selected tensor."""
        ref = self.app.query_one(DetailPane).ref
        if ref is None or not self.view.loaded:
            return None
        if ref.kind is NodeKind.MODULE:
            return ref.path if self.view.module(ref.path) is not None else None
        if ref.kind is NodeKind.TENSOR:
            return self.view.owner(ref.path)
        return None

    def module_name(self, path: str) -> str:
        """How the module at `path` is called: the model's name for the root."""
        layout = self.view.layout
        return (layout.model_name if layout else "model") if path == "" else path

    def show(self) -> None:
        """The hooks pane: the hooks of the module `h` attaches to, as last listed."""
        target = self.target()
        pane = self.app.query_one(HooksPane)
        if target is None:
            pane.show(None, None)
        else:
            pane.show(target, self.view.hooks.get(target), self.module_name(target))

    def attach(self) -> None:
        """`h`: the hook dialog for the selected module."""
        target = self.target()
        if target is None:
            return
        dialog = HookDialog(
            target, self.module_name(target), self.view.hooks.get(target), view=self.view
        )
        self.app.push_screen(dialog, self._attach_chosen)

    def _attach_chosen(self, choice: HookSpec | None) -> None:
        if choice is not None:
            self.submit(cmd.AttachHook(choice))

    def detach(self) -> None:
        """`x`: detach the hook highlighted in the hooks pane (asking first for one modscope
        did not add)."""
        hook = self.app.query_one(HooksPane).selected
        if hook is None:
            return
        if hook.hook_id.is_modscope:
            self.submit(cmd.DetachHook(hook))
            return
        if hook.owner == "modscope":  # a break condition's watch, the layers view's statistics
            if hook.action == BREAK_WATCH:
                self.app.notify("this hook watches a break condition: b removes the condition")
            else:
                self.app.notify("this hook gathers the layers view's statistics (l): it stays")
            return
        body = Text()
        body.append(
            f"This {hook.kind} hook was added by {OWNER_WORDS.get(hook.owner, hook.owner)}"
            ", not by modscope. Detaching it changes what the model does from now on, "
            "and modscope cannot put it back.\n\n"
        )
        if hook.owner == "global":
            body.append(
                "It is a global module hook: detaching it removes it from every module.\n\n",
                style="bold",
            )
        body.append_text(hook_text(hook, self.script))
        self.app.push_screen(
            ConfirmScreen("Detach a hook modscope did not add?", body, yes="Detach", no="Keep"),
            lambda yes: self.submit(cmd.DetachHook(hook)) if yes else None,
        )

    def open_event(self, event: HookEvent) -> None:
        """`enter` on a hook event: the event in full."""
        name = self.module_name(event.module)
        self.app.push_screen(HookEventScreen(event, name, view=self.view))
