"""What modscope's hooks capture as they fire: each tensor once while it is unchanged, and
mid-sized host tensors copied then summarised many at a time, stacked, when they are resolved."""

from __future__ import annotations

import torch

from modscope.core.stats.stacked import stackable
from modscope.core.stats.summary import PendingSummary, StackedBatch, capture
from modscope.core.stats.tensor_memo import TensorMemo, version_of
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
        self._seen: TensorMemo[PendingSummary] = TensorMemo()
        self._batches: dict[tuple[int, torch.dtype], StackedBatch] = {}

    def capture(self, t: torch.Tensor) -> PendingSummary:
        hit = self._seen.get(t)
        if hit is not None:
            return hit
        if version_of(t) is None:  # an inference tensor: nothing is remembered of it
            return capture(t)
        pending = self._stacked(t) if stackable(t) else capture(t)
        self._seen.put(t, pending)
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
