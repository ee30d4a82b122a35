"""What modscope's hooks capture as they fire: each tensor once while it is unchanged, and
mid-sized host tensors copied then summarised many at a time, stacked, when they are resolved."""

from __future__ import annotations

import weakref

import torch

from modscope.core.stats.stacked import stackable
from modscope.core.stats.summary import PendingSummary, StackedBatch, capture
from modscope.core.stats.tensor_stats import host_facts_of


class CaptureMemo:
    """`capture` for hooks: each tensor seen once while it is unchanged, mid-sized host
    tensors summarised stacked, later.

    Hooks on every module meet most tensors twice: a module's output is the next one's
    input, a container's arguments its first child's, and a gradient reaches the hooks on
    both ends of the activation it belongs to. The same tensor object at the same version
    counter (an in-place change bumps it) has the same values, so its capture is shared.
    Entries hold weak references, so no tensor lives longer for being seen; `clear` after
    each iteration. Tensors `stackable` are copied into a `StackedBatch` of their numel and
    dtype, summarised when first resolved or when the batch is full.
    """

    def __init__(self) -> None:
        self._seen: dict[int, tuple[weakref.ref[torch.Tensor], int, PendingSummary]] = {}
        self._batches: dict[tuple[int, torch.dtype], StackedBatch] = {}

    def capture(self, t: torch.Tensor) -> PendingSummary:
        try:
            version = t._version
        except RuntimeError:  # inference tensors keep no version counter
            return capture(t)
        hit = self._seen.get(id(t))
        if hit is not None and hit[0]() is t and hit[1] == version:
            return hit[2]
        pending = self._stacked(t) if stackable(t) else capture(t)
        self._seen[id(t)] = (weakref.ref(t), version, pending)
        return pending

    def _stacked(self, t: torch.Tensor) -> PendingSummary:
        key = (t.numel(), t.dtype)
        batch = self._batches.get(key)
        if batch is None or not batch.open:
            if batch is not None and batch.summaries is None:
                batch.summary(0)  # full: summarise now, so that its copies go
            batch = self._batches[key] = StackedBatch(key[0])
        # detach(): the copy must record no autograd history.
        return batch.add(host_facts_of(t), t.detach().clone())

    def clear(self) -> None:
        self._seen.clear()
        self._batches.clear()
