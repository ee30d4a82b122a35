"""Plain training loops over a model script's objects, as a user writes them (watch tests)."""

from __future__ import annotations

import runpy
from typing import Any

from modscope.core.script.batches import BatchSource, spread, takes_batch


def script_objects(path: str) -> dict[str, Any]:
    """A model script run fresh (its seeds set again): its top-level names."""
    return runpy.run_path(path, run_name="__own_loop__")


def train(ns: dict[str, Any], steps: int) -> None:
    """`steps` iterations of the script's objects in the order `modscope run` runs them:
    zero_grad, the next batch, forward and the loss (or `compute_loss`), backward, the optimizer
    and scheduler steps."""
    model, optimizer = ns["model"], ns["optimizer"]
    loss_fn, compute_loss = ns.get("loss_fn"), ns.get("compute_loss")
    scheduler = ns.get("scheduler")
    batches = BatchSource(ns["inputs"])
    for _ in range(steps):
        optimizer.zero_grad()
        batch = batches.next()
        if compute_loss is not None:
            loss = compute_loss(model, batch)
        else:
            args, kwargs = spread(batch)
            output = model(*args, **kwargs)
            loss = loss_fn(output, batch) if takes_batch(loss_fn) else loss_fn(output)
        loss.backward()
        optimizer.step()
        if scheduler is not None:
            scheduler.step()
