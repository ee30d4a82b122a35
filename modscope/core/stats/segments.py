"""Per-tensor statistics of many small tensors at once: one flat buffer, segment reductions.

A model of thousands of small tensors spends far more on launching reductions, several per
tensor, than on the arithmetic. Here the tensors of one device and dtype are joined back to
back in one buffer, each tensor a segment of it, and every per-tensor number comes from some
twenty whole-buffer kernels however many tensors there are: `index_add_` for sums and counts,
`scatter_reduce_` for extremes. Nothing here waits for the device; the caller brings the
results to the host.
"""

from __future__ import annotations

import functools
import math
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import TypeVar

import torch
from torch._utils import _flatten_dense_tensors

MIN_TENSORS = 8
"""Join tensors only when a device and dtype has at least this many: below it, the twenty-odd
kernels of the joined path cost more than the per-tensor ones (where the two cross is what
`benchmarks/bench_record.py --crossover` measures)."""

SUMMARY_MAX_NUMEL = 512
"""Summarize tensors of at most this many elements joined. Segment reductions do several
times the arithmetic of plain ones, so per-tensor kernels win once the tensor is big enough
for their launch cost not to matter (`benchmarks/bench_record.py --crossover`)."""

DIFF_MAX_NUMEL = 4096
"""Diff tensors of at most this many elements joined: the per-key diff launches twice the
kernels a summary does, so joining pays for larger tensors."""

JOIN_MAX_TOTAL = 2**18
"""At most this many elements are joined in one buffer: the joined statistics work in float64
with several temporaries the size of the buffer, so joining every small tensor of a large
model at once would raise the process's peak memory by many times the size of its small
tensors; bounded buffers keep that peak small at no measurable cost in time."""


def bounded(
    items: Sequence[T], size: Callable[[T], int], limit: int = JOIN_MAX_TOTAL
) -> list[list[T]]:
    """`items` in order, cut into runs whose sizes add up to at most `limit` (an item larger
    than `limit` is a run of its own)."""
    runs: list[list[T]] = [[]]
    total = 0
    for item in items:
        n = size(item)
        if runs[-1] and total + n > limit:
            runs.append([])
            total = 0
        runs[-1].append(item)
        total += n
    return runs if runs[-1] else []


JOINABLE_DTYPES = frozenset(
    {
        torch.float16,
        torch.bfloat16,
        torch.float32,
        torch.float64,
        torch.uint8,
        torch.int8,
        torch.int16,
        torch.int32,
        torch.int64,
        torch.bool,
    }
)
"""Dtypes whose values float64 holds as the per-tensor path sees them (complex, float8 and
quantized tensors keep the per-tensor path)."""

SUMMARY_COLUMNS = ("lo", "hi", "total", "m2", "sumsq", "nonzero", "finite", "nan")
"""The columns of `summary_stats`: over the finite elements the extremes, the sum, the sum of
squared deviations from their mean and the sum of squares; then the counts of nonzero (NaN
included), finite and NaN elements."""

DIFF_COLUMNS = ("changed", "max_abs_delta", "rel_change")

FROM_ZERO = -1.0
"""`rel_change` of a key whose old value was all zeros: a marker no ratio of norms can be."""
"""The columns of `diff_stats`."""

_PLAIN_TYPES = (torch.Tensor, torch.nn.Parameter)
T = TypeVar("T")


def joinable(t: torch.Tensor) -> bool:
    """True for a dense tensor of a plain type whose joined statistics are exact."""
    return (
        type(t) in _PLAIN_TYPES
        and t.dtype in JOINABLE_DTYPES
        and t.layout == torch.strided
        and not t.is_meta
        and not t.is_nested
    )


def flatten(tensors: Sequence[torch.Tensor]) -> torch.Tensor:
    """A new 1-D buffer holding `tensors` back to back, each in row-major order.

    One call into C++ instead of a Python `reshape` per tensor, which costs as much as the copy
    itself for small tensors. `_flatten_dense_tensors` is private, but DDP and apex have
    bucketed gradients with it for years.
    """
    if len(tensors) == 1:
        # _flatten_dense_tensors returns a view, not a copy, of a single contiguous tensor.
        return tensors[0].reshape(-1).clone()
    return _flatten_dense_tensors(list(tensors))


@dataclass(frozen=True)
class Segments:
    """Where each tensor lies in a flat buffer: its size, and each element's segment index."""

    sizes: tuple[int, ...]
    ids: torch.Tensor

    @classmethod
    def of(cls, sizes: Sequence[int], device: torch.device) -> Segments:
        """The segments of tensors of `sizes` elements joined back to back on `device`."""
        sizes = tuple(sizes)
        counts = torch.tensor(sizes, dtype=torch.int64)
        # non_blocking: a plain host-to-device copy would wait for the device.
        counts = counts.to(device, non_blocking=True)
        ids = torch.repeat_interleave(counts, output_size=sum(sizes))
        return cls(sizes, ids)

    def __len__(self) -> int:
        return len(self.sizes)

    @property
    def device(self) -> torch.device:
        return self.ids.device

    def _zeros(self, *shape: int) -> torch.Tensor:
        return torch.zeros((len(self), *shape), dtype=torch.float64, device=self.device)

    def sum(self, columns: torch.Tensor) -> torch.Tensor:
        """Per-segment sums of a float64 `(total, c)` or `(total,)` tensor."""
        return self._zeros(*columns.shape[1:]).index_add_(0, self.ids, columns)

    def count(self, mask: torch.Tensor) -> torch.Tensor:
        """Per-segment counts of the true elements of a bool `(total,)` `mask`, as float64.

        Counts are exact in any order of addition, so where every segment has one size (the
        biases and norm weights of a model of many equal layers) a host mask is counted along
        the rows of a byte view, faster than an `index_add_` of float64.
        """
        if self.uniform and self.ids.is_cpu and mask.is_contiguous() and mask.numel():
            rows = mask.view(torch.uint8).view(len(self), -1)
            return rows.sum(dim=1, dtype=torch.int64).double()
        return self.sum(mask.double())

    @functools.cached_property
    def uniform(self) -> bool:
        """True when every segment has the same size."""
        return len(set(self.sizes)) <= 1

    def extreme(self, values: torch.Tensor, reduce: str, empty: float) -> torch.Tensor:
        """Per-segment `amin`/`amax` of float64 `values` (no NaN); `empty` where none."""
        out = torch.full((len(self),), empty, dtype=torch.float64, device=self.device)
        return out.scatter_reduce_(0, self.ids, values, reduce)

    def gather_small(self, flat: torch.Tensor, limit: int) -> torch.Tensor:
        """The elements of the segments of at most `limit` elements, back to back."""
        if max(self.sizes, default=0) <= limit:
            return flat
        sizes = torch.tensor(self.sizes, dtype=torch.int64)
        starts = torch.cumsum(sizes, 0) - sizes
        small = sizes <= limit
        kept_sizes = sizes[small]
        kept_total = int(kept_sizes.sum())
        # Element j of the kept output comes from position j + (start - start in output).
        shift = starts[small] - (torch.cumsum(kept_sizes, 0) - kept_sizes)
        index = torch.arange(kept_total) + torch.repeat_interleave(shift, kept_sizes)
        return flat.index_select(0, index.to(flat.device, non_blocking=True))


def as_float64(flat: torch.Tensor) -> torch.Tensor:
    """`flat` as float64: exact for every joinable dtype but int64 beyond 2**53, which rounds
    as the per-tensor path's own conversion does."""
    return flat if flat.dtype == torch.float64 else flat.to(torch.float64)


def summary_stats(flat: torch.Tensor, segments: Segments) -> torch.Tensor:
    """A `(len(segments), 8)` float64 tensor of `SUMMARY_COLUMNS` per segment of `flat`.

    Statistics skip NaN and infinities as the per-tensor path does; a segment with no finite
    element has extremes of +inf/-inf and a NaN mean, which the caller must not read.
    """
    x = as_float64(flat)
    finite = torch.isfinite(x)
    kept = torch.where(finite, x, 0.0)
    # One index_add_ per column: stacking them into one costs more than the launches saved.
    total = segments.sum(kept)
    sumsq = segments.sum(kept * kept)
    nonzero = segments.count(x != 0)
    count = segments.count(finite)
    nan = segments.count(torch.isnan(x))
    mean = total / count
    # Deviations from each segment's own mean: the sum of squares less n * mean**2 would
    # cancel every digit for a tensor of large mean and small spread.
    deviation = torch.where(finite, x - mean.index_select(0, segments.ids), 0.0)
    m2 = segments.sum(deviation * deviation)
    lo = segments.extreme(torch.where(finite, x, math.inf), "amin", math.inf)
    hi = segments.extreme(torch.where(finite, x, -math.inf), "amax", -math.inf)
    return torch.stack([lo, hi, total, m2, sumsq, nonzero, count, nan], 1)


_ARITHMETIC_FLOATS = frozenset({torch.float16, torch.bfloat16, torch.float32, torch.float64})


def comparable(t: torch.Tensor) -> torch.Tensor:
    """The values a diff compares: floats with arithmetic as they are; integers, bools and
    float8 (which torch cannot subtract) as float64, which holds each float8 value exactly."""
    return t if t.dtype in _ARITHMETIC_FLOATS else t.to(torch.float64)


def exactly_same(
    new: torch.Tensor, old: torch.Tensor, a: torch.Tensor, b: torch.Tensor
) -> torch.Tensor:
    """Where `new` equals `old`, from their `comparable` forms `a` and `b`: NaN in both counts
    as equal; integers compare in their own dtype, as float64 rounds int64 past 2**53."""
    if not (new.is_floating_point() or new.is_complex()):
        return new == old
    return (a == b) | (torch.isnan(a) & torch.isnan(b))


def diff_stats(new: torch.Tensor, old: torch.Tensor, segments: Segments) -> torch.Tensor:
    """A `(len(segments), 3)` float64 tensor of `DIFF_COLUMNS` per segment of `new` vs `old`.

    `changed` is 1.0 where some element differs (NaN in both counts as equal); the largest
    |delta| is NaN when some delta is; the relative change is |delta| / |old| (2-norms), 0 when
    nothing changed and `FROM_ZERO` when `old` is all zeros (no relative change to give).
    Deltas are taken in the tensors' own dtype, as the per-tensor path does.
    """
    a, b = comparable(new), comparable(old)
    same = exactly_same(new, old, a, b)
    delta = as_float64(torch.where(same, 0.0, a - b).abs())
    delta_nan = torch.isnan(delta)
    b64 = as_float64(b)
    changed = segments.count(~same)
    nans = segments.count(delta_nan)
    delta_sq = segments.sum(delta * delta)
    old_sq = segments.sum(b64 * b64)
    largest = segments.extreme(torch.where(delta_nan, 0.0, delta), "amax", 0.0)
    largest = torch.where(nans > 0, math.nan, largest)
    delta_norm = delta_sq.sqrt()
    rel = torch.where(delta_norm == 0, 0.0, delta_norm / old_sq.sqrt())
    rel = torch.where((delta_norm != 0) & (old_sq == 0), FROM_ZERO, rel)
    return torch.stack([(changed > 0).double(), largest, rel], 1)
