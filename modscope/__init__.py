"""modscope: a keyboard-driven terminal debugger for the insides of PyTorch modules."""

from __future__ import annotations

import os
import sys
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

from modscope.core.contract.script_names import MISSING
from modscope.core.contract.steps import BreakError
from modscope.core.contract.version import VERSION as __version__

if TYPE_CHECKING:
    from modscope.watching.handle import OnBreak, Watch

__all__ = ["BreakError", "__version__", "inspect", "structure", "watch"]


def inspect(
    model: Any,
    *,
    inputs: Any = MISSING,
    loss_fn: Any = MISSING,
    optimizer: Any = None,
    scheduler: Any = None,
    compute_loss: Callable[..., Any] | None = None,
    train_step: Callable[..., Any] | None = None,
    hooks: Sequence[str] = (),
) -> None:
    """Open modscope on live objects, like `breakpoint()`; returns when you quit the app.

    The arguments follow the model-script contract (`inputs`, `loss_fn`, `optimizer`, ...;
    an absent `loss_fn` means "the output is the loss when it is a scalar"); `hooks` are
    `--hook` specs attached at start. Every hook modscope adds is removed before this returns.
    Where no app can run (stdin or stdout not a terminal, or inside a running event loop such
    as a notebook) it says why on stderr and prints the module tree and findings instead.
    """
    from modscope.live import inspect_objects

    caller = sys._getframe(1)
    inspect_objects(
        model,
        origin=(caller.f_code.co_filename, caller.f_lineno),
        hooks=hooks,
        inputs=inputs,
        loss_fn=loss_fn,
        optimizer=optimizer,
        scheduler=scheduler,
        compute_loss=compute_loss,
        train_step=train_step,
    )


def structure(model: Any) -> dict[str, Any]:
    """`model`'s structure as stable, JSON-serialisable plain data: every module path and class,
    every parameter and buffer (shape, dtype, `requires_grad` or persistence, `tied_to`), the
    `state_dict` keys in order, what is held but unregistered, and the totals.

    Two models built alike give equal structures (no values, ids or devices in it);
    `modscope.testing`'s `model_snapshot` fixture stores it as text and diffs it.
    """
    from torch import nn

    from modscope.core.model.structure import model_structure

    if not isinstance(model, nn.Module):
        raise TypeError(f"modscope.structure: model is a {type(model).__name__}, not an nn.Module")
    return model_structure(model)


def watch(
    model: Any,
    optimizer: Any = None,
    *,
    breaks: Sequence[str] = (),
    record: str | os.PathLike[str] | None = None,
    layers: bool = False,
    hooks: Sequence[str] = (),
    on_break: OnBreak = None,
    overwrite: bool = False,
) -> Watch:
    """Watch your own training loop without changing it: `with modscope.watch(model, opt):`.

    A step is one `optimizer.step()` (with gradient accumulation, one step for several
    backward passes), or a call of the handle's `step(loss)`. Per step it keeps what
    `modscope run` keeps: the loss, every gradient's summary, the `state_dict` diff, the
    doctor's findings, and with `layers=True` each module's output statistics (the handle's
    `records`, `findings`, `layers`). `breaks` are `--break` conditions (`"nan"`, `"loss>10"`,
    `"grad-norm>1e3"`, `"step=500"`, `"MODULE:output-absmax>1e4"`); where one trips,
    `on_break` says what happens: `"app"` opens modscope's app on the live model, then raises
    `modscope.BreakError`; `"raise"` raises it at once; `"print"` prints the break and goes
    on; `"record"` writes it to the recording and goes on (default: `"app"` when stdin and
    stdout are a terminal, else `"raise"`). `record="DIR"` writes what `run --record` writes
    (`DIR/rank<N>` under torchrun), `overwrite=True` replacing an earlier recording of this
    script. `hooks` are `--hook` specs. Leaving the `with` block (or `close()`) removes every
    hook modscope added. docs/watch.md says more.
    """
    from modscope.watching.handle import Watch

    caller = sys._getframe(1)
    return Watch(
        model,
        optimizer,
        breaks=breaks,
        record=record,
        layers=layers,
        hooks=hooks,
        on_break=on_break,
        overwrite=overwrite,
        origin=(caller.f_code.co_filename, caller.f_lineno),
    )
