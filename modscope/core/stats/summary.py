"""Tensor summaries: cheap capture when a hook fires, one batched host transfer per device later."""

from __future__ import annotations

import dataclasses
import math
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modscope.core.contract.tensors import TensorSummary
from modscope.core.stats import chunked, segments
from modscope.core.stats.segments import Segments, joinable
from modscope.core.stats.stacked import MIN_STACKED, STACK_MAX_TOTAL, stackable, stacked_stats
from modscope.core.stats.tensor_stats import (
    Stats,
    TensorFacts,
    build_summary,
    device_parts,
    device_stats,
    facts_of,
    failed,
    host_facts_of,
    host_stats,
    stat_data,
    values_copy,
    work_tensor,
)

MAX_VALUES = 16
"""Tensors with at most this many elements carry their values (docs/design.md section 2)."""

COPY_LIMIT = 4096
"""Off the host, tensors with at most this many elements are copied whole when captured and
summarized on the host by `resolve`: for them, a dozen GPU kernel launches cost far more than
one copy and the arithmetic. (Many small ones are summarized together on their device first,
see `segments`.)"""

# Device types whose results are on the host already: reading them back is no sync, so a
# summary is finished at capture unless `resolve` may join it with others. Tests empty this
# to run the deferred paths on the CPU.
_HOST_DEVICE_TYPES = frozenset({"cpu"})


# Not frozen: a hook phase makes tens of thousands, and a frozen `__init__` assigns each
# field through `object.__setattr__`. Nothing changes one after it is made.
@dataclass(slots=True, eq=False)
class PendingSummary:
    """What `capture` saw: the host facts, and the statistics wherever they are.

    A small tensor's whole data is copied into `data`, or (by `capture_many`, with many
    others) into one `joint` copy, from `start`: `copied()` is its view, made only when
    wanted, since tens of thousands of views take more memory than their data. When `joins`,
    `resolve` may summarize it together with others of its device and dtype (see `segments`).
    Otherwise, on the CPU `ready` holds the finished summary, and elsewhere `parts` holds the
    statistics, small tensors still on its device, with `values` a copy of at most
    `MAX_VALUES` elements. The copies are private, so a later in-place change to the original
    does not alter what was seen. A hook's capture of a mid-sized host tensor is a row of a
    `batch` instead, whose summaries are computed together (`StackedBatch`).
    """

    facts: TensorFacts
    ready: TensorSummary | None = None
    data: torch.Tensor | None = None
    joint: torch.Tensor | None = None
    start: int = 0
    parts: tuple[torch.Tensor, ...] = ()
    values: torch.Tensor | None = None
    counted: int = 0
    maybe_nonfinite: bool = False
    joins: bool = False
    batch: StackedBatch | None = None
    row: int = 0

    def copied(self) -> torch.Tensor | None:
        """The private copy of the whole data (flat when a piece of `joint`), if one was taken."""
        if self.joint is not None:
            return self.joint[self.start : self.start + self.facts.numel]
        return self.data

    def _on_device(self) -> tuple[torch.Tensor, ...]:
        """The tensors `resolve` brings to the host, in order."""
        copy = self.copied()
        if copy is not None:
            return (copy,)
        return self.parts if self.values is None else (*self.parts, self.values)


def _joined_later(x: torch.Tensor) -> bool:
    """True when `capture` copies `x` whole for `resolve` to summarize, with others of its
    device and dtype when there are enough (see `segments`)."""
    n = x.numel()
    return 0 < n <= min(segments.SUMMARY_MAX_NUMEL, COPY_LIMIT) and joinable(x)


def capture(t: torch.Tensor) -> PendingSummary:
    """Record a tensor as it is now, without waiting for its device.

    Small tensors are copied whole, to be summarized by `resolve`, many at a time when there
    are many (see `segments`). Larger ones are summarized at once on the CPU, and elsewhere
    reduced on their device to a few numbers that move to the host in `resolve`. Works on
    `t.detach()`, under `torch.no_grad()` where it computes: it consumes no random numbers and
    changes neither the tensor, its `.grad` nor the autograd graph.
    """
    facts = facts_of(t)
    # A strided nested tensor refuses `detach`; its values are read into a new tensor anyway.
    x = t if t.is_nested else t.detach()
    if _joined_later(x):
        # The hot path for models of many small tensors, so no more than it needs: the clone
        # of a detached tensor records no history, and it keeps the shape (a reshape costs
        # as much as a small copy; `segments.flatten` ignores shapes).
        copy = x.clone(memory_format=torch.contiguous_format)
        return PendingSummary(facts, data=copy, joins=True)
    with torch.no_grad():
        try:
            data, note = stat_data(x)
            if note is not None:
                facts = facts._replace(note=note)
            if data is None or data.numel() == 0:
                return PendingSummary(facts)
            if x.device.type in _HOST_DEVICE_TYPES:
                taken = chunked.taken_stats(t) if data is x else None
                if taken is not None:  # read while the diff compared it (`chunked`)
                    return PendingSummary(facts, ready=build_summary(facts, taken, x.numel(), None))
                return PendingSummary(facts, ready=host_summary(facts, x, data))
            if data is x and x.numel() <= COPY_LIMIT:
                return PendingSummary(facts, data=values_copy(x))
            maybe_nonfinite = data.is_floating_point() or data.is_complex()
            return PendingSummary(
                facts,
                parts=device_parts(work_tensor(data), maybe_nonfinite),
                values=values_copy(x) if x.numel() <= MAX_VALUES else None,
                counted=data.numel(),
                maybe_nonfinite=maybe_nonfinite,
            )
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            # Tensor subclasses and exotic dtypes may refuse a reduction: a debugger must
            # show what it can rather than fail the user's iteration.
            return PendingSummary(failed(facts, exc))


def host_summary(facts: TensorFacts, x: torch.Tensor, data: torch.Tensor) -> TensorSummary:
    """The summary of a host tensor `x` whose statistics are those of `data`."""
    maybe_nonfinite = data.is_floating_point() or data.is_complex()
    # A large tensor's chunks are each read once; one with a non-finite value (or complex)
    # takes the whole-tensor path.
    stats = chunked.host_stats(data) if chunked.is_large(data) else None
    if stats is None:
        work = work_tensor(data)
        stats = host_stats(work)
        if stats is None:
            raw = [p.tolist() for p in device_parts(work, maybe_nonfinite)]
            stats = device_stats(raw, data.numel(), maybe_nonfinite)
    values = values_copy(x).tolist() if x.numel() <= MAX_VALUES else None
    return build_summary(facts, stats, data.numel(), values)


def capture_many(tensors: Iterable[Any]) -> list[PendingSummary | None]:
    """`capture` each tensor; None (and anything that is not a tensor) stays None.

    Small tensors that `resolve` will join (at least `segments.MIN_TENSORS` of one device and
    dtype) are copied by one `segments.flatten` rather than one clone each.
    """
    items = list(tensors)
    out: list[PendingSummary | None] = [None] * len(items)
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = {}
    for i, t in enumerate(items):
        if isinstance(t, torch.Tensor) and _joined_later(t):
            groups.setdefault((t.device, t.dtype), []).append(i)
    for members in groups.values():
        if len(members) < segments.MIN_TENSORS:
            continue
        joined = [items[i] for i in members]
        with torch.no_grad():
            joint = segments.flatten(joined)
        start = 0
        for i, t in zip(members, joined, strict=True):
            out[i] = PendingSummary(facts_of(t), joint=joint, start=start, joins=True)
            start += t.numel()
    _capture_stacked(items, out)
    captured = [
        p if p is not None else capture(t) if isinstance(t, torch.Tensor) else None
        for p, t in zip(out, items, strict=True)
    ]
    chunked.forget_taken()  # those of tensors not among `tensors` would only go stale
    return captured


def _capture_stacked(items: Sequence[Any], out: list[PendingSummary | None]) -> None:
    """Fill `out` with the finished summaries of host tensors summarised stacked, by numel and
    dtype (`stacked_stats`); the rest stay None for `capture`."""
    by_shape: dict[tuple[int, torch.dtype], list[int]] = {}
    for i, t in enumerate(items):
        if out[i] is None and isinstance(t, torch.Tensor) and stackable(t):
            by_shape.setdefault((t.numel(), t.dtype), []).append(i)
    for members in by_shape.values():
        if len(members) < MIN_STACKED:
            continue
        for i, stats in zip(members, stacked_stats([items[i] for i in members]), strict=True):
            if stats is not None:
                facts = host_facts_of(items[i])  # `stackable` said a plain host tensor
                out[i] = PendingSummary(facts, ready=build_summary(facts, stats, facts.numel, None))


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


def _to_host(entries: Sequence[Sequence[torch.Tensor]]) -> list[list[torch.Tensor]]:
    """Host copies of each entry's tensors (flattened), with one transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, entry in enumerate(entries):
        by_device.setdefault(entry[0].device, []).append(i)
    out: list[list[torch.Tensor]] = [[] for _ in entries]
    for device, indices in by_device.items():
        if device.type in _HOST_DEVICE_TYPES:
            for i in indices:
                out[i] = list(entries[i])
            continue
        # Pieces of one dtype are joined first, so that little work is done per piece; all
        # dtypes then travel as raw bytes in one buffer: one copy (and one sync) per device,
        # exact for every dtype (int64 beyond 2**53 and complex values too).
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        filled: dict[torch.dtype, int] = {}
        where: list[tuple[int, torch.dtype, int, int]] = []
        for i in indices:
            for piece in entries[i]:
                by_dtype.setdefault(piece.dtype, []).append(piece)
                start = filled.get(piece.dtype, 0)
                filled[piece.dtype] = start + piece.numel()
                where.append((i, piece.dtype, start, filled[piece.dtype]))
        joined = {dtype: segments.flatten(pieces) for dtype, pieces in by_dtype.items()}
        sizes = [t.numel() * t.element_size() for t in joined.values()]
        buffer = torch.cat([t.view(torch.uint8) for t in joined.values()]).cpu()
        # clone(): a view to a wider dtype needs an aligned offset.
        on_host = {
            dtype: chunk.clone().view(dtype)
            for dtype, chunk in zip(joined, torch.split(buffer, sizes), strict=True)
        }
        for i, dtype, start, stop in where:
            out[i].append(on_host[dtype][start:stop])
    return out


_Member = tuple[int, PendingSummary]
"""A pending summary that `resolve` joins: its index and itself (its data copied)."""

FINISH_ROWS = 4096
"""`_Joined.finish` reads its table into Python this many members at a time, so that its lists
of numbers stay small next to the summaries made from them."""


@dataclass(frozen=True, eq=False)
class _Joined:
    """The summaries of many small copied tensors of one device and dtype, computed together
    on their device: a `(k, 8)` table of `segments.SUMMARY_COLUMNS` and the values of those
    with at most `MAX_VALUES` elements, back to back."""

    members: list[_Member]
    on_device: tuple[torch.Tensor, torch.Tensor]

    @classmethod
    def of(cls, members: list[_Member]) -> _Joined | None:
        """The members' statistics, or None when some op refuses them (each member then takes
        the per-tensor path, which reports its own errors)."""
        try:
            with torch.no_grad():
                flat = _back_to_back(members)
                if flat is None:
                    # `resolve` joins only members with a copy.
                    flat = segments.flatten(
                        [c for _, p in members if (c := p.copied()) is not None]
                    )
                segs = Segments.of([p.facts.numel for _, p in members], flat.device)
                stats = segments.summary_stats(flat, segs)
                values = segs.gather_small(flat, MAX_VALUES)
        except (RuntimeError, NotImplementedError, TypeError):
            return None
        return cls(members, (stats, values))

    def finish(self, on_host: Sequence[torch.Tensor]) -> Iterator[tuple[int, TensorSummary]]:
        """Each member's index and summary, from the host copy of `on_device`."""
        stats, values = on_host
        table = stats.reshape(len(self.members), len(segments.SUMMARY_COLUMNS))
        offset = 0
        for begin in range(0, len(self.members), FINISH_ROWS):
            block = self.members[begin : begin + FINISH_ROWS]
            # By column: 8 lists rather than one per member, which the garbage collector tracks.
            columns = table[begin : begin + len(block)].T.tolist()
            shown_count = sum(p.facts.numel for _, p in block if p.facts.numel <= MAX_VALUES)
            listed = values[offset : offset + shown_count].tolist()
            offset += shown_count
            at = 0
            for (i, p), *row in zip(block, *columns, strict=True):
                lo, hi, total, m2, sumsq, nonzero, finite, nan = row
                size = p.facts.numel
                shown = None
                if size <= MAX_VALUES:
                    shown = listed[at : at + size]
                    at += size
                mean = total / finite if finite else math.nan
                norm = math.sqrt(sumsq)
                numbers = Stats(lo, hi, mean, m2, norm, int(nonzero), int(finite), int(nan))
                yield i, build_summary(p.facts, numbers, size, shown)


def _back_to_back(members: Sequence[_Member]) -> torch.Tensor | None:
    """The members' data as one view, when they are pieces of one `joint` copy, back to back
    and in order (as `capture_many` takes them), which would otherwise be joined again (a copy
    of 19,800 pieces a step for a model of 13,200 modules); None when they are not. Nothing
    writes to the copy or the view."""
    joint = members[0][1].joint
    if joint is None:
        return None
    start = stop = members[0][1].start
    for _, p in members:
        if p.joint is not joint or p.start != stop:
            return None
        stop += p.facts.numel
    return joint[start:stop]


def _finish(p: PendingSummary, on_host: list[torch.Tensor]) -> TensorSummary:
    """The summary of one pending from the host copies of its device tensors."""
    if p.data is not None or p.joint is not None:
        (copy,) = on_host
        try:
            return host_summary(p.facts, copy, copy)
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            return build_summary(failed(p.facts, exc), None, 0, None)
    lists = [piece.tolist() for piece in on_host]
    n_parts = len(p.parts)
    stats = device_stats(lists[:n_parts], p.counted, p.maybe_nonfinite)
    values = lists[n_parts] if p.values is not None else None
    return build_summary(p.facts, stats, p.counted, values)


def resolve(pending: Sequence[PendingSummary | None]) -> list[TensorSummary | None]:
    """Turn captured summaries into `TensorSummary` objects; None stays None.

    Waits for the devices: statistics and copies go to the host in one transfer per device.
    Copies of small tensors are summarized together, by some twenty kernels for all of them,
    when a device and dtype has at least `segments.MIN_TENSORS` (see `segments`).
    """
    out: list[TensorSummary | None] = [None] * len(pending)
    alone: list[tuple[int, PendingSummary]] = []
    by_kind: dict[tuple[str, str], list[_Member]] = {}
    for i, p in enumerate(pending):
        if p is None:
            continue
        if p.ready is not None:
            out[i] = p.ready
        elif p.batch is not None:
            out[i] = p.batch.summary(p.row)
        elif p.joins and (p.data is not None or p.joint is not None):
            by_kind.setdefault((p.facts.device, p.facts.dtype), []).append((i, p))
        elif not p._on_device():
            out[i] = build_summary(p.facts, None, 0, None)
        else:
            alone.append((i, p))
    batches: list[_Joined] = []
    for same_kind in by_kind.values():
        for members in segments.bounded(same_kind, lambda m: m[1].facts.numel):
            batch = _Joined.of(members) if len(members) >= segments.MIN_TENSORS else None
            if batch is None:
                alone.extend(members)
            else:
                batches.append(batch)
    host = _to_host([p._on_device() for _, p in alone] + [b.on_device for b in batches])
    for (i, p), pieces in zip(alone, host[: len(alone)], strict=True):
        out[i] = _finish(p, pieces)
    for batch, pieces in zip(batches, host[len(alone) :], strict=True):
        for i, summary in batch.finish(pieces):
            out[i] = summary
    return out


def summarize(t: torch.Tensor) -> TensorSummary:
    """The summary of one tensor as it is now (waits for its device)."""
    result = resolve([capture(t)])[0]
    assert result is not None
    return result


def summarize_many(tensors: Sequence[torch.Tensor | None]) -> list[TensorSummary | None]:
    """Summaries of many tensors with one transfer per device; None stays None."""
    return resolve(capture_many(tensors))


def flatten_tensors(obj: Any) -> list[torch.Tensor | None]:
    """The leaves of a module's output or arguments in order; a non-tensor leaf becomes None.

    Walks tensors, tuples and lists (namedtuples too), dict values (Hugging Face `ModelOutput`
    is a dict) and dataclass fields.
    """
    out: list[torch.Tensor | None] = []
    _flatten(obj, out, depth=0)
    return out


def _flatten(obj: Any, out: list[torch.Tensor | None], depth: int) -> None:
    if isinstance(obj, torch.Tensor):
        out.append(obj)
    elif depth > 32:
        # A structure that contains itself: stop rather than recurse forever.
        out.append(None)
    elif isinstance(obj, (tuple, list)):
        for item in obj:
            _flatten(item, out, depth + 1)
    elif isinstance(obj, dict):
        for item in obj.values():
            _flatten(item, out, depth + 1)
    elif dataclasses.is_dataclass(obj) and not isinstance(obj, type):
        for f in dataclasses.fields(obj):
            _flatten(getattr(obj, f.name), out, depth + 1)
    else:
        out.append(None)


def first_tensor(obj: Any) -> torch.Tensor | None:
    """The first tensor in `obj` in `flatten_tensors` order, or None."""
    return next((t for t in flatten_tensors(obj) if t is not None), None)


def capture_value(obj: Any) -> list[PendingSummary | None]:
    """`capture` every leaf of a module output or argument structure (see `flatten_tensors`)."""
    return capture_many(flatten_tensors(obj))


def summarize_value(obj: Any) -> tuple[TensorSummary | None, ...]:
    """Summaries of every leaf of a module output or argument structure, in order."""
    return tuple(resolve(capture_value(obj)))
