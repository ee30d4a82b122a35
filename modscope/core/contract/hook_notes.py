"""What a person should know about a hook kind, in words (torch-free, for the engine and the UI)."""

from __future__ import annotations

from collections.abc import Mapping

from modscope.core.contract.fmt import format_shape
from modscope.core.contract.hook_spec import HookKind
from modscope.core.contract.steps import HookEvent
from modscope.core.contract.tensors import SummaryList

INPUT_GRAD_NOTE = "grad_input is each input's whole gradient (from all its uses)"
LEGACY_NOTE = (
    "legacy hook: grad_input/grad_output are those of the last operation inside forward, "
    "not of the module's inputs"
)
FULL_HOOK_COST = (
    "changing a gradient needs a module-level full backward hook: it wraps inputs and outputs in "
    "new autograd nodes (an in-place op right after this module then fails, PyTorch #61519)"
)
LEGACY_BESIDE_FULL = "PyTorch forbids a legacy backward hook beside a full one"
FULL_BESIDE_LEGACY = "PyTorch forbids a full backward hook beside a legacy one"


def backward_conflict(kind: HookKind, module: str) -> str:
    """Why PyTorch refuses a backward hook of `kind` on `module` (its name as shown): a legacy
    one beside a full one, or a full one beside a legacy one (the engine and the hook dialog
    both say it so)."""
    if kind is HookKind.LEGACY_BACKWARD:
        return f"{LEGACY_BESIDE_FULL}: {module} already has a full backward hook"
    return f"{FULL_BESIDE_LEGACY}: {module} has a legacy backward hook"


def legacy_lesson(
    module: str, type_name: str = "", inputs: SummaryList | None = None, *, compared: bool = True
) -> str:
    """Why a legacy backward hook's numbers differ from the module's inputs' gradients, said of
    this module: `module` is its dotted path ("" for the root), `inputs` what its forward took.

    `compared` says whether an observed backward (the inputs' own gradients) is shown beside it.
    """
    where = module or "the root module"
    if type_name:
        where += f" ({type_name})"
    forward = f" ({type_name}.forward)" if type_name else ""
    if inputs:
        plural = "s" if len(inputs) != 1 else ""
        of = f"its {len(inputs)} input{plural}"
        # An input that got no gradient (it did not require one) has no summary, so no shape.
        if any(s is not None for s in inputs):
            shapes = ", ".join(format_shape(s.shape) if s is not None else "?" for s in inputs)
            of += f" (shape{plural} {shapes})"
    else:
        of = "the module's inputs"
    # PyTorch hands a legacy hook the grad_input of the last autograd node that forward built,
    # whatever the module's inputs were (the reason register_backward_hook is deprecated).
    lesson = (
        f"The legacy hook on {where} reports the gradients of the last operation inside "
        f"forward{forward}, not of {of}: "
    )
    if compared:
        return lesson + "compare the backward row, which sees the inputs' own gradients."
    return lesson + "attach backward observe here to see the inputs' own gradients."


def module_inputs(events: Mapping[HookKind, HookEvent]) -> SummaryList | None:
    """What a module's forward took, from the last events of modscope's hooks on it: the
    arguments a forward-pre or forward hook saw, else the gradients an observed backward saw
    (one per input, with its shape; None for an input that needed no gradient)."""
    for kind in (HookKind.FORWARD_PRE, HookKind.FORWARD):
        e = events.get(kind)
        if e is not None and e.args:
            return e.args
    e = events.get(HookKind.BACKWARD)
    return e.grad_input if e is not None and e.grad_input else None


BREAK_WATCH = "break watch"
"""The action a hook of an armed break condition is listed with (`hooks.listing`)."""
LAYER_STATISTICS = "layer statistics"
"""The action a hook of the layers view's statistics is listed with (`hooks.listing`)."""
