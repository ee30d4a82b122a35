"""What a person should know about a hook kind, in words (torch-free, for the engine and the UI)."""

from __future__ import annotations

INPUT_GRAD_NOTE = "grad_input is each input's whole gradient (from all its uses)"
LEGACY_NOTE = (
    "legacy hook: grad_input/grad_output are those of the last operation inside forward, "
    "not of the module's inputs"
)
LEGACY_LESSON = (
    "The legacy hook reports the gradients of the last operation inside forward (for the "
    "article's PowModel, powParam * (x ** q)), not of the module's inputs: compare the "
    "backward row, which sees the inputs' own gradients."
)
FULL_HOOK_COST = (
    "changing a gradient needs a module-level full backward hook: it wraps inputs and outputs in "
    "new autograd nodes (an in-place op right after this module then fails, PyTorch #61519)"
)
LEGACY_BESIDE_FULL = "PyTorch forbids a legacy backward hook beside a full one"
FULL_BESIDE_LEGACY = "PyTorch forbids a full backward hook beside a legacy one"
