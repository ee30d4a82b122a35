"""The legacy backward hook's lesson speaks of the selected module, its class and its real inputs:
in the detail pane, the hook event view and the hook dialog, and as torch-free text."""

from __future__ import annotations

from modscope.core.contract.hook_notes import legacy_lesson, module_inputs
from modscope.core.contract.hook_spec import HookAction, HookKind
from modscope.core.contract.steps import HookEvent, Phase
from modscope.core.contract.tensors import TensorSummary
from modscope.tui.detail_pane import DetailPane
from modscope.tui.hook_dialog import HookDialog
from modscope.tui.hook_event_screen import HookEventScreen
from modscope.tui.hook_events_pane import HookEventsPane
from tests.tui.tui_helpers import press, settle

SIZE = (100, 40)


def scalar() -> TensorSummary:
    return TensorSummary(shape=(), dtype="float32", device="cpu", numel=1)


def event(kind: HookKind, **seen: object) -> HookEvent:
    return HookEvent(0, 1, Phase.BACKWARD, "blocks.0", kind, HookAction.OBSERVE, **seen)  # type: ignore[arg-type]


def test_the_lesson_names_the_module_its_class_and_its_inputs():
    matrix = TensorSummary(shape=(4, 40), dtype="float32", device="cpu", numel=160)
    text = legacy_lesson("blocks.0", "Block", (matrix, scalar()))
    assert text == (
        "The legacy hook on blocks.0 (Block) reports the gradients of the last operation inside "
        "forward (Block.forward), not of its 2 inputs (shapes [4, 40], []): compare the backward "
        "row, which sees the inputs' own gradients."
    )
    assert "its 1 input (shape [])" in legacy_lesson("m", "M", (scalar(),))
    alone = legacy_lesson("", "", None, compared=False)
    assert "on the root module reports" in alone and "not of the module's inputs" in alone
    assert alone.endswith("attach backward observe here to see the inputs' own gradients.")
    assert "PowModel" not in legacy_lesson("logModel", "LogModel", (scalar(),))


def test_the_inputs_come_from_the_forward_hooks_else_the_observed_backward():
    x, q = scalar(), TensorSummary(shape=(3,), dtype="float32", device="cpu", numel=3)
    backward = event(HookKind.BACKWARD, grad_input=(x, None))
    assert module_inputs({HookKind.BACKWARD: backward}) == (x, None)
    forward = event(HookKind.FORWARD, args=(x, q))
    assert module_inputs({HookKind.BACKWARD: backward, HookKind.FORWARD: forward}) == (x, q)
    legacy = event(HookKind.LEGACY_BACKWARD, grad_input=(x, x))  # not the module's inputs
    assert module_inputs({HookKind.LEGACY_BACKWARD: legacy}) is None
    # An input without a gradient has no known shape.
    assert "(shapes [], ?)" in legacy_lesson("m", "M", (x, None))
    assert "not of its 2 inputs: compare" in legacy_lesson("m", "M", (None, None))


async def test_the_detail_pane_and_the_event_view_speak_of_log_model(make_app):
    app = make_app(hooks=["logModel:legacy-backward", "logModel:backward"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        app.go_to("logModel")
        await settle(app, pilot)
        lesson = (
            "The legacy hook on logModel (LogModel) reports the gradients of the last operation "
            "inside forward (LogModel.forward), not of its 1 input (shape [])"
        )
        detail = " ".join(app.query_one(DetailPane).text.split())
        assert lesson in detail and "compare the backward row" in detail
        assert "PowModel" not in detail and "powParam" not in detail
        events = app.query_one(HookEventsPane)
        events.focus()
        events.highlighted = next(
            i
            for i, e in enumerate(events.entries)
            if not isinstance(e, str) and e.kind is HookKind.LEGACY_BACKWARD
        )
        await press(app, pilot, "enter")
        assert isinstance(app.screen, HookEventScreen)
        assert lesson in " ".join(app.screen.text.split())
        await press(app, pilot, "escape")


async def test_the_lesson_for_pow_model_counts_its_two_inputs(make_app):
    app = make_app(hooks=["powModel:legacy-backward", "powModel:backward"])
    async with app.run_test(size=SIZE) as pilot:
        await press(app, pilot, "s")
        app.go_to("powModel")
        await settle(app, pilot)
        detail = " ".join(app.query_one(DetailPane).text.split())
        assert "on powModel (PowModel)" in detail
        # x and q need no gradient here: the observed backward sees None for both, no shapes.
        assert "not of its 2 inputs:" in detail


async def test_the_hook_dialog_explains_the_legacy_hook_on_the_selected_module(make_app):
    app = make_app()
    async with app.run_test(size=SIZE) as pilot:
        await settle(app, pilot)
        app.go_to("logModel")
        await press(app, pilot, "h", "up")  # the last kind: legacy-backward
        dialog = app.screen
        assert isinstance(dialog, HookDialog) and dialog.kind is HookKind.LEGACY_BACKWARD
        text = " ".join(dialog.text.split())
        assert "The legacy hook on logModel (LogModel)" in text
        assert "inside forward (LogModel.forward)" in text
        await press(app, pilot, "escape")
