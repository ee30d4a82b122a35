"""`ModscopeCallback`: `modscope.watch()` over a Hugging Face `Trainer.train` (a
`transformers.TrainerCallback`).

The Trainer calls the model, `backward()` (through accelerate) and the optimizer's `step()` as a
plain loop does, so the watch sees each phase; one optimizer step is one record, its loss the
value `backward()` was called on (with gradient accumulation, the Trainer's scaled losses summed
over the micro-batches).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Sequence
from types import FrameType, TracebackType
from typing import Any

import transformers

from modscope.integrations.options import WatchOptions, class_origin
from modscope.watching.handle import OnBreak, Watch


class ModscopeCallback(transformers.TrainerCallback):
    """Watch a Hugging Face Trainer with `modscope.watch()`: `Trainer(...,
    callbacks=[ModscopeCallback(breaks=["nan"], record="runs/rec")])`.

    The options are `modscope.watch`'s (`breaks`, `record`, `layers`, `hooks`, `on_break`,
    `overwrite`). The watch opens at `on_train_begin`, on the model and the torch optimizer
    the Trainer made (the one inside accelerate's `AcceleratedOptimizer`), and closes at
    `on_train_end`; its `records`, `findings`, `layers` and `breaks` stay readable on
    `watch`. The recording names the file that called `trainer.train()`.

    The Trainer has no hook for an exception: a `modscope.BreakError` closes the watch before
    it leaves modscope, but another exception that ends training leaves the watch open until
    `close()`, the next `train()`, or the end of a `with` block around the training
    (`with ModscopeCallback(...) as watching: ... trainer.train()`), which closes it whatever
    happened.
    """

    def __init__(
        self,
        *,
        breaks: Sequence[str] = (),
        record: str | os.PathLike[str] | None = None,
        layers: bool = False,
        hooks: Sequence[str] = (),
        on_break: OnBreak = None,
        overwrite: bool = False,
    ) -> None:
        self.options = WatchOptions(
            breaks=breaks,
            record=record,
            layers=layers,
            hooks=hooks,
            on_break=on_break,
            overwrite=overwrite,
        )
        self.watch: Watch | None = None
        """The watch of the current (or last) training."""

    def on_train_begin(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.close()
        model, optimizer = kwargs["model"], kwargs.get("optimizer")
        optimizer = getattr(optimizer, "optimizer", optimizer)
        origin = _train_caller() or class_origin(model) or ("<trainer>", 0)
        # Nothing around the Trainer's loop closes the watch once a BreakError has left it.
        self.watch = self.options.open(model, optimizer, origin, close_on_break=True)

    def on_train_end(
        self,
        args: transformers.TrainingArguments,
        state: transformers.TrainerState,
        control: transformers.TrainerControl,
        **kwargs: Any,
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the watch (every hook it added removed); safe to call twice."""
        if self.watch is not None:
            self.watch.close()

    def __enter__(self) -> ModscopeCallback:
        return self

    def __exit__(
        self,
        kind: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.close()


def _train_caller() -> tuple[str, int] | None:
    """The file and line that called `Trainer.train()` (found up the stack), if any."""
    train = transformers.Trainer.train.__code__
    frame: FrameType | None = sys._getframe(1)
    while frame is not None:
        if frame.f_code is train:
            caller = frame.f_back
            if caller is None:
                return None
            return os.path.abspath(caller.f_code.co_filename), caller.f_lineno
        frame = frame.f_back
    return None
