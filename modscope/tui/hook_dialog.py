"""The hook dialog (`h`): choose a kind and an action for the selected module, keys alone."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import ClassVar

from rich.text import Text
from textual import on
from textual.app import ComposeResult
from textual.binding import Binding, BindingType
from textual.containers import Horizontal, Vertical
from textual.message import Message
from textual.widgets import Button, Input, Label, RadioButton, RadioSet, Static

from modscope.core.contract.fmt import printable
from modscope.core.contract.hook_notes import (
    FULL_HOOK_COST,
    INPUT_GRAD_NOTE,
    backward_conflict,
    legacy_lesson,
    module_inputs,
)
from modscope.core.contract.hook_spec import HookAction, HookInfo, HookKind, HookSpec
from modscope.report.labels import shown_path
from modscope.tui.bounded_input import NUMBER_LENGTH, BoundedInput
from modscope.tui.modal import CentredModal
from modscope.tui.model_view import ModelView

KINDS = tuple(HookKind)
ACTIONS = tuple(HookAction)
CHANGES = (HookAction.SCALE, HookAction.ZERO)
FULL_HOOK_KINDS = (HookKind.BACKWARD, HookKind.BACKWARD_PRE)


class _ChoiceSet(RadioSet):
    """A RadioSet whose arrows choose (not only move) and whose `enter` attaches."""

    # Replaces RadioSet's arrow bindings (same keys): they only move its highlight.
    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("down,right", "choose(1)", "Next choice", show=False),
        Binding("up,left", "choose(-1)", "Previous choice", show=False),
        Binding("enter", "submit", "Attach", show=False),
    ]

    class Submitted(Message):
        """`enter` on a choice."""

    def action_choose(self, step: int) -> None:
        """Press the next (or previous) enabled button, wrapping around; RadioSet moves its
        highlight to the pressed one."""
        buttons = [b for b in self.query_children(RadioButton) if not b.disabled]
        if not buttons:
            return
        pressed = self.pressed_button
        at = buttons.index(pressed) if pressed in buttons else -1 if step > 0 else 0
        buttons[(at + step) % len(buttons)].value = True

    def action_submit(self) -> None:
        self.post_message(self.Submitted())


class HookDialog(CentredModal["HookSpec | None"]):
    """Kind and action (with a factor for `scale`) for one module; `q` or `escape` cancels
    (`q` types in the factor field).

    `hooks` are the module's hooks as last listed: a choice PyTorch forbids beside them (a
    legacy backward hook beside a full one, or the reverse) is refused here, with the reason.
    `view` (the app's model view, when given) names the module's class and inputs in the notes.
    """

    BINDINGS: ClassVar[list[BindingType]] = [
        Binding("q", "cancel", "Close", id="close_hook"),
    ]

    AUTO_FOCUS = "#kind"

    DEFAULT_CSS = """
    HookDialog > #hook-box {
        width: 76;
        max-width: 100%;
        max-height: 100%;
    }
    HookDialog #hook-choices {
        height: auto;
    }
    HookDialog #hook-choices > Vertical {
        width: 1fr;
        height: auto;
    }
    HookDialog RadioSet {
        width: 1fr;
    }
    HookDialog #factor-row {
        height: auto;
        margin-left: 1;
    }
    HookDialog #factor-row Label {
        padding: 0 1 0 0;
    }
    HookDialog #factor {
        width: 16;
    }
    HookDialog #hook-note, HookDialog #hook-spec, HookDialog #hook-error {
        height: auto;
    }
    HookDialog #hook-error {
        color: $error;
    }
    HookDialog #hook-buttons {
        height: auto;
        align-horizontal: right;
    }
    HookDialog #hook-buttons Button {
        margin-left: 2;
    }
    """

    def __init__(
        self,
        module: str,
        name: str,
        hooks: Sequence[HookInfo] | None = None,
        *,
        view: ModelView | None = None,
    ) -> None:
        super().__init__()
        self.module = module
        self.module_name = name
        self.hooks = tuple(hooks or ())
        self.model_view = view

    def compose(self) -> ComposeResult:
        with Vertical(id="hook-box") as box:
            title = Text("Attach a hook to ")
            title.append(shown_path(self.module_name), style="bold")
            box.border_title = title
            box.border_subtitle = Text(
                "tab moves · arrows choose · enter attaches · q / escape cancel"
            )
            with Horizontal(id="hook-choices"):
                with Vertical():
                    yield Label("kind")
                    yield _ChoiceSet(
                        *(RadioButton(k.value, value=k is HookKind.FORWARD_PRE) for k in KINDS),
                        id="kind",
                    )
                with Vertical():
                    yield Label("action")
                    yield _ChoiceSet(
                        RadioButton("observe", value=True),
                        RadioButton("scale by a factor"),
                        RadioButton("zero"),
                        RadioButton("pause (breakpoint)"),
                        id="action",
                    )
                    with Horizontal(id="factor-row"):
                        yield Label("factor")
                        yield BoundedInput(
                            placeholder="e.g. 2",
                            type="number",
                            id="factor",
                            disabled=True,
                            compact=True,
                            max_length=NUMBER_LENGTH,
                        )
            yield Static(id="hook-note")
            yield Static(id="hook-error")
            yield Static(id="hook-spec")
            with Horizontal(id="hook-buttons"):
                yield Button("Attach", variant="primary", id="attach", compact=True)
                yield Button("Cancel", id="cancel", compact=True)

    def on_mount(self) -> None:
        self._update()

    # -- what is chosen ------------------------------------------------------------------------

    @property
    def kind(self) -> HookKind:
        return KINDS[max(0, self.query_one("#kind", RadioSet).pressed_index)]

    @property
    def action(self) -> HookAction:
        return ACTIONS[max(0, self.query_one("#action", RadioSet).pressed_index)]

    def _factor(self) -> float | None:
        text = self.query_one("#factor", Input).value.strip()
        try:
            value = float(text)
        except ValueError:
            return None
        return value if math.isfinite(value) else None

    def problem(self) -> str | None:
        """Why the current choice cannot be attached, or None."""
        kind, action = self.kind, self.action
        if action is HookAction.SCALE and self._factor() is None:
            return "scale needs a number, e.g. 2"
        full = any("full" in h.flags for h in self.hooks)
        legacy = any("legacy" in h.flags for h in self.hooks)
        name = shown_path(self.module_name)
        if (kind is HookKind.LEGACY_BACKWARD and full) or (
            kind is HookKind.BACKWARD and action in CHANGES and legacy
        ):
            return backward_conflict(kind, name)
        return None

    def choice(self) -> HookSpec:
        factor = self._factor() if self.action is HookAction.SCALE else None
        return HookSpec(self.module, self.kind, self.action, factor)

    def note(self) -> str:
        """What this choice does and what it costs, in a sentence or two."""
        kind, action = self.kind, self.action
        notes = []
        if kind is HookKind.LEGACY_BACKWARD:
            notes.append(
                f"{self._legacy_lesson()} modscope also observes backward on this module, so "
                "both are shown side by side."
            )
        elif kind in FULL_HOOK_KINDS and action in CHANGES:
            notes.append(f"cost: {FULL_HOOK_COST}.")
        elif kind is HookKind.BACKWARD:
            notes.append(
                f"Seen with tensor hooks (nothing in the model changes); {INPUT_GRAD_NOTE}."
            )
        elif kind is HookKind.BACKWARD_PRE:
            notes.append("Seen with a tensor hook on the output (nothing in the model changes).")
        if action is HookAction.SCALE:
            target = (
                "arguments"
                if kind is HookKind.FORWARD_PRE
                else "output"
                if kind is HookKind.FORWARD
                else "gradients"
            )
            notes.append(f"Multiplies the {target} by the factor.")
        elif action is HookAction.ZERO:
            notes.append("Replaces them with zeros.")
        elif action is HookAction.PAUSE:
            notes.append(
                "Stops the iteration inside this module: c continues, s / n run to "
                "the end of the iteration / phase, q quits."
            )
        return " ".join(notes)

    def _legacy_lesson(self) -> str:
        view = self.model_view
        module = view.module(self.module) if view is not None else None
        seen = view.seen.get(self.module, {}) if view is not None else {}
        return legacy_lesson(
            self.module, module.type_name if module is not None else "", module_inputs(seen)
        )

    # -- keeping the dialog current ------------------------------------------------------------

    @on(RadioSet.Changed)
    @on(Input.Changed)
    def _changed(self) -> None:
        self._update()

    def _update(self) -> None:
        factor = self.query_one("#factor", Input)
        factor.disabled = self.action is not HookAction.SCALE
        note = self.note()
        self.query_one("#hook-note", Static).update(Text(printable(note), style="dim"))
        self.query_one("#hook-note", Static).display = bool(note)
        spec = Text("spec  ", style="dim")
        spec.append(printable(str(self.choice())), style="bold")
        self.query_one("#hook-spec", Static).update(spec)
        self._error("")

    # -- leaving -------------------------------------------------------------------------------

    @on(_ChoiceSet.Submitted)
    @on(Input.Submitted)
    @on(Button.Pressed, "#attach")
    def action_attach(self) -> None:
        problem = self.problem()
        if problem is not None:
            self._error(problem)
            if self.action is HookAction.SCALE and self._factor() is None:
                self.query_one("#factor", Input).focus()
            return
        self.dismiss(self.choice())

    def _error(self, message: str) -> None:
        error = self.query_one("#hook-error", Static)
        error.update(Text(printable(message)))
        error.display = bool(message)

    @on(Button.Pressed, "#cancel")
    def action_cancel(self) -> None:
        self.dismiss(None)

    def check_action(self, action: str, parameters: tuple[object, ...]) -> bool | None:
        # In the factor field `q` is a key to type, not a way out (`escape` still is).
        if action == "cancel":
            return not isinstance(self.focused, Input)
        return True

    @property
    def text(self) -> str:
        """The note, the error and the spec as shown (for tests)."""
        parts = []
        for widget_id in ("hook-note", "hook-error", "hook-spec"):
            rendered = self.query_one(f"#{widget_id}", Static).render()
            parts.append(str(rendered))
        return "\n".join(p for p in parts if p)
