"""What modscope's hooks capture as they fire: each tensor once while it is unchanged, and
mid-sized host tensors copied then summarised many at a time, stacked, when they are resolved."""

from __future__ import annotations

import weakref

import torch

from modscope.core.stacked_stats import MIN_STACKED, STACK_MAX_TOTAL, stackable, stacked_stats
from modscope.core.summary import PendingSummary, capture, host_summary
from modscope.core.tensor_stats import TensorFacts, build_summary, host_facts_of
from modscope.core.types import TensorSummary


class StackedBatch:
    """Private copies of host tensors of one numel and dtype, taken as hooks fired, whose
    summaries are computed together the first time one of them is asked for.

    Summarising a tensor of a thousand elements as a hook fires costs nearly all its time in
    the Python and dispatch around five reductions; a copy costs a fraction of that, and the
    stacked reductions (`stacked_stats`) then cost little per row. The copies are taken at
    fire time because the values may change afterwards (an in-place ReLU after a Linear).
    """

    __slots__ = ("copies", "facts", "rows_max", "summaries")

    def __init__(self, numel: int) -> None:
        self.facts: list[TensorFacts] = []
        self.copies: list[torch.Tensor] = []
        self.summaries: list[TensorSummary] | None = None
        self.rows_max = max(STACK_MAX_TOTAL // numel, 1)
        """Rows at most: the copies held stay within one stacked buffer's size."""

    @property
    def open(self) -> bool:
        """True while rows may still be added (not summarised yet, not full)."""
        return self.summaries is None and len(self.copies) < self.rows_max

    def add(self, facts: TensorFacts, copy: torch.Tensor) -> PendingSummary:
        self.facts.append(facts)
        self.copies.append(copy)
        return PendingSummary(facts, batch=self, row=len(self.copies) - 1)

    def summary(self, row: int) -> TensorSummary:
        """The summary of one row, computing every row's (and dropping the copies) at first."""
        if self.summaries is None:
            self.summaries = self._summarise()
            self.copies = []
        return self.summaries[row]

    def _summarise(self) -> list[TensorSummary]:
        copies = self.copies
        stats = stacked_stats(copies) if len(copies) >= MIN_STACKED else [None] * len(copies)
        # Rows stacking leaves out (a non-finite element, a variance that needs a second
        # pass) take the per-tensor path, as do batches too small to stack.
        return [
            build_summary(facts, row, facts.numel, None)
            if row is not None
            else host_summary(facts, copy, copy)
            for facts, copy, row in zip(self.facts, copies, stats, strict=True)
        ]


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
