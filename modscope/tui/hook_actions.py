"""The app's hook keys: `h` attaches, `x` detaches (asking first for a hook modscope did not
add), and what a pause breakpoint selects and shows (a mixin of the app)."""

from __future__ import annotations

from typing import TYPE_CHECKING

from rich.text import Text
from textual.app import App

from modscope.control import commands as cmd
from modscope.core.contract.fmt import printable
from modscope.core.contract.hook_notes import BREAK_WATCH
from modscope.core.contract.hook_spec import HookSpec
from modscope.core.contract.steps import BreakEvent, HookEvent
from modscope.tui.confirm_screen import ConfirmScreen
from modscope.tui.detail_pane import DetailPane
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hook_events_pane import HookEventsPane
from modscope.tui.hooks_pane import OWNER_WORDS, HooksPane, hook_text
from modscope.tui.model_view import ModelView, NodeKind


class HookActions(App[None]):
    """`h`, `x`, the hooks pane's content, and pauses; mixed into `ModscopeApp`."""

    script: str
    view: ModelView

    if TYPE_CHECKING:  # provided by ModscopeApp and its other parts

        def _submit(self, command: cmd.Command) -> None: ...
        def go_to(self, path: str) -> None: ...

    def _hook_target(self) -> str | None:
        """The module `h` attaches to and the hooks pane lists: the selected module, or the
        module of the selected tensor."""
        ref = self.query_one(DetailPane).ref
        if ref is None or not self.view.loaded:
            return None
        if ref.kind is NodeKind.MODULE:
            return ref.path if self.view.module(ref.path) is not None else None
        if ref.kind is NodeKind.TENSOR:
            return self.view.owner(ref.path)
        return None

    def _module_name(self, path: str) -> str:
        layout = self.view.layout
        return (layout.model_name if layout else "model") if path == "" else path

    def _show_hooks(self) -> None:
        target = self._hook_target()
        pane = self.query_one(HooksPane)
        if target is None:
            pane.show(None, None)
        else:
            pane.show(target, self.view.hooks.get(target), self._module_name(target))

    def action_attach_hook(self) -> None:
        target = self._hook_target()
        if target is None:
            return
        dialog = HookDialog(
            target, self._module_name(target), self.view.hooks.get(target), view=self.view
        )
        self.push_screen(dialog, self._attach_chosen)

    def _attach_chosen(self, choice: HookSpec | None) -> None:
        if choice is not None:
            self._submit(cmd.AttachHook(choice))

    def action_detach_hook(self) -> None:
        hook = self.query_one(HooksPane).selected
        if hook is None:
            return
        if hook.hook_id.is_modscope:
            self._submit(cmd.DetachHook(hook))
            return
        if hook.owner == "modscope":  # a break condition's watch, the layers view's statistics
            if hook.action == BREAK_WATCH:
                self.notify("this hook watches a break condition: b removes the condition")
            else:
                self.notify("this hook gathers the layers view's statistics (l): it stays")
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
        self.push_screen(
            ConfirmScreen("Detach a hook modscope did not add?", body, yes="Detach", no="Keep"),
            lambda yes: self._submit(cmd.DetachHook(hook)) if yes else None,
        )

    def _paused(self, event: HookEvent) -> None:
        """A pause hook holds the iteration: select its module and show what arrived."""
        self.view.paused = event
        if self.view.module(event.module) is not None:
            self.go_to(event.module)
        self.query_one(DetailPane).refresh_detail()

    def _break_hit(self, event: BreakEvent) -> None:
        """A break condition holds the iteration: select its module (the root when it concerns
        no one module) and show the values that tripped it."""
        self.view.broke = event
        path = event.module or ""
        if self.view.module(path) is not None:
            self.go_to(path)
        self.query_one(DetailPane).refresh_detail()
        self.notify(
            printable(event.message or f"break {event.condition}"),
            title=f"Break at step {event.step}",
            severity="warning",
            markup=False,
        )

    def on_hook_events_pane_opened(self, event: HookEventsPane.Opened) -> None:
        name = self._module_name(event.event.module)
        self.push_screen(HookEventScreen(event.event, name, view=self.view))
