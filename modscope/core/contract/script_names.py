"""The names a model script may define, and the marker for one it leaves out (no torch here)."""

from __future__ import annotations

from typing import Any

SCRIPT_NAMES = (
    "model",
    "inputs",
    "loss_fn",
    "compute_loss",
    "optimizer",
    "scheduler",
    "train_step",
)
"""The top-level names modscope reads from a model script (and `modscope.inspect()` takes)."""


class _Missing:
    """Not given: a script that does not define a name, an argument left out (not None:
    `loss_fn = None` means forward only, no `loss_fn` means the output is the loss)."""

    def __repr__(self) -> str:
        return "<absent>"

    def __bool__(self) -> bool:
        return False

    def __reduce__(self) -> str:
        # Copies and unpickled objects are the one marker, so `is MISSING` holds for them too.
        return "MISSING"


MISSING: Any = _Missing()
