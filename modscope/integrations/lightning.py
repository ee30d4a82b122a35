"""`ModscopeCallback`: `modscope.watch()` over a Lightning `Trainer.fit` (`lightning.pytorch`).

Lightning's automatic optimization runs the forward and backward inside
`optimizer.step(closure)`; the watch sees them there as in a plain loop (the optimizer's step
pre-hook first, then the forward, backward and the update, then its post-hook), so each
optimizer step is one record, with the loss `backward()` was called on (the training step's
loss, divided by `accumulate_grad_batches`, summed over the micro-batches: their mean) and the
gradients the update used. `on_train_batch_end` gets the same values (one micro-batch's each), so
the callback hands no loss over.
"""

from __future__ import annotations

import os
from collections.abc import Sequence

import lightning.pytorch as pl

from modscope.integrations.options import WatchOptions, class_origin
from modscope.watching.handle import OnBreak, Watch


class ModscopeCallback(pl.Callback):
    """Watch a Lightning fit with `modscope.watch()`: `Trainer(callbacks=[ModscopeCallback(
    breaks=["nan"], record="runs/rec")])`.

    The options are `modscope.watch`'s (`breaks`, `record`, `layers`, `hooks`, `on_break`,
    `overwrite`). The watch opens when fitting starts, on the `LightningModule` and the
    trainer's first optimizer (the torch optimizer under Lightning's wrapper), and closes when
    fitting ends or an exception (a `modscope.BreakError` included) leaves the fit: every hook
    it added is removed then. Its `records`, `findings`, `layers` and `breaks` stay readable on
    `watch` after the fit. The recording names the file of the LightningModule's class.

    A forward is seen where the LightningModule or one of its direct children is called:
    `training_step` may call `self(...)` or `self.encoder(x)`.
    For `lightning.pytorch` (the `lightning` package); the older `pytorch_lightning` package's
    Trainer does not take this callback.
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
        super().__init__()
        self.options = WatchOptions(
            breaks=breaks,
            record=record,
            layers=layers,
            hooks=hooks,
            on_break=on_break,
            overwrite=overwrite,
        )
        self.watch: Watch | None = None
        """The watch of the current (or last) fit."""

    def on_fit_start(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()
        optimizers = trainer.optimizers
        optimizer = getattr(optimizers[0], "optimizer", optimizers[0]) if optimizers else None
        origin = class_origin(pl_module) or (f"<{type(pl_module).__qualname__}>", 0)
        self.watch = self.options.open(pl_module, optimizer, origin)

    def on_fit_end(self, trainer: pl.Trainer, pl_module: pl.LightningModule) -> None:
        self.close()

    def on_exception(
        self, trainer: pl.Trainer, pl_module: pl.LightningModule, exception: BaseException
    ) -> None:
        self.close()

    def close(self) -> None:
        """Close the watch (every hook it added removed); safe to call twice."""
        if self.watch is not None:
            self.watch.close()
