"""modscope in the user's own tests: `assert_healthy`, `assert_loads` and the `model_snapshot`
fixture (`modscope.testing.plugin`, loaded by pytest through its entry point).

Importing this package imports nothing heavy: pytest loads it in every run where modscope is
installed, so torch and syrupy are imported by the functions that need them.
"""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from modscope.core.contract.script_names import MISSING

__all__ = ["assert_healthy", "assert_loads"]


def assert_healthy(
    model: Any,
    *,
    inputs: Any = MISSING,
    loss_fn: Any = MISSING,
    optimizer: Any = None,
    scheduler: Any = None,
    compute_loss: Callable[..., Any] | None = None,
    train_step: Callable[..., Any] | None = None,
    steps: int = 2,
    allow: Iterable[str] = (),
    strict: bool = False,
) -> None:
    """Fail (`AssertionError`) when modscope's doctor finds an error-level pitfall in `model`.

    Runs what `modscope check` runs: the static rules, then `steps` real iterations and the
    eval-mode probe on a deep copy of the model and optimizer (or on the originals, restored,
    where a copy cannot be independent), so `model` and `optimizer` are unchanged afterwards.
    The arguments follow the model-script contract; without `inputs` only the static rules
    run. The message lists every finding that fails, with its fix and the file and line of the
    class it is in. `allow` names finding kinds that may appear (`"unused-parameter"`);
    `strict=True` fails on warnings too. An iteration that raises fails with its location.
    """
    from modscope.testing.health import check_health

    caller = sys._getframe(1)
    check_health(
        model,
        origin=caller.f_code.co_filename,
        objects={
            "inputs": inputs,
            "loss_fn": loss_fn,
            "optimizer": optimizer,
            "scheduler": scheduler,
            "compute_loss": compute_loss,
            "train_step": train_step,
        },
        steps=steps,
        allow=allow,
        strict=strict,
    )


def assert_loads(model: Any, checkpoint: str | os.PathLike[str] | Mapping[str, Any]) -> None:
    """Fail (`AssertionError`) unless the state_dict `checkpoint` (a `torch.save` file, read
    with `weights_only=True`, a `.safetensors` file, or a state_dict in memory) loads into
    `model` with `load_state_dict(strict=True)`. The message lists missing and unexpected keys,
    shape mismatches, and likely renames as a mapping to paste. A file that cannot be read
    safely (pickled code) fails too, without running it."""
    from torch import nn

    from modscope.core.model.checkpoint_compat import CheckpointError, check_checkpoint

    if not isinstance(model, nn.Module):
        raise TypeError(f"assert_loads: model is a {type(model).__name__}, not an nn.Module")
    try:
        result = check_checkpoint(model, checkpoint)
    except CheckpointError as exc:
        raise AssertionError(f"modscope.testing.assert_loads: {exc}") from None
    if not result.loads:
        raise AssertionError("modscope.testing.assert_loads: " + "\n".join(result.lines()))
