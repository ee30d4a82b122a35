"""Large tensors read chunk by chunk: their statistics and their diff, each chunk read once.

A whole-tensor op on a large tensor streams it from memory, and each further statistic streams
it again; a temporary the size of the tensor (a difference, a converted copy) is new memory
that the kernel must fault in. Chunks of `chunk_numel` elements stay in the cache while the
several reductions a summary or a diff needs read them, and their temporaries are the size of
a chunk. The diff refreshes the previous copy from the same chunk it has just compared
(`chunked_diff(..., refresh=True)`), so the copy is updated in place, with no second pass and
no second copy.

Tensors of at most one chunk keep the whole-tensor paths (`key_diffs`, `tensor_stats`), whose
results do not depend on the chunking. Over several chunks the sums and norms are those of
the chunks, added in float64: they may differ from a whole-tensor op's in the last digits (as
two orders of summation do), never in the extremes, counts or whether a key changed.
"""

from __future__ import annotations

import math
from collections.abc import Iterator

import torch

from modscope.core.stats import segments
from modscope.core.stats.tensor_memo import TensorMemo
from modscope.core.stats.tensor_stats import Stats, in_memory_order, work_dtype

HOST_CHUNK_BYTES = 2**18
"""A chunk on the CPU: a few of its temporaries fit in a core's L2 cache beside it."""

DEVICE_CHUNK_BYTES = 2**26
"""A chunk off the CPU: large, since each chunk costs launches (and, for a previous copy kept
on the host, a transfer each way); small against device memory."""


def chunk_numel(t: torch.Tensor) -> int:
    """Elements in one chunk of `t`."""
    size = HOST_CHUNK_BYTES if t.device.type == "cpu" else DEVICE_CHUNK_BYTES
    return max(size // max(t.element_size(), 1), 1)


def is_large(t: torch.Tensor) -> bool:
    """True for a dense tensor of more than one chunk, whose statistics are taken chunked."""
    return t.layout == torch.strided and not t.is_meta and t.numel() > chunk_numel(t)


def pieces(t: torch.Tensor, numel: int, like: torch.Tensor | None = None) -> list[torch.Tensor]:
    """Views of `t` that cover it in row-major order, of about `numel` elements each: runs of
    its flat view when `t` (and `like`, which must be cut the same way) are contiguous, else
    runs of rows along its first dim (a row larger than `numel` is a piece of its own)."""
    contiguous = t.is_contiguous() and (like is None or like.is_contiguous())
    if contiguous or t.dim() == 0:
        return list(t.reshape(-1).split(numel)) if t.dim() else [t]
    row = math.prod(t.shape[1:])
    return list(t.split(max(numel // max(row, 1), 1)))


def host_stats(data: torch.Tensor) -> Stats | None:
    """`tensor_stats.host_stats` of `tensor_stats.work_tensor(data)` for a large real host
    tensor, each chunk converted (`work_dtype`) and read once: extremes, sum, norm and zeros
    from the chunk while it is in cache. None when some element is not finite, and for
    complex values (the caller takes the whole-tensor path)."""
    if data.is_complex():
        return None
    x, dtype = in_memory_order(data), work_dtype(data.dtype)
    chunks = pieces(x, chunk_numel(x))
    summed = _Summed(dtype)
    for raw in chunks:
        summed.add(raw)
    return summed.stats(chunks)


class _Summed:
    """`host_stats` taken chunk by chunk: what the chunks added so far."""

    def __init__(self, dtype: torch.dtype) -> None:
        self.dtype = dtype
        self.lo, self.hi, self.total, self.sumsq = math.inf, -math.inf, 0.0, 0.0
        self.n = self.nonzero = 0
        self.finite = True

    def add(self, raw: torch.Tensor) -> float:
        """Add a chunk; its squared norm (NaN once some element is not finite)."""
        if not self.finite:
            return math.nan
        c = raw if raw.dtype == self.dtype else raw.to(self.dtype)
        lo, hi = (float(v) for v in torch.aminmax(c))
        part, square = float(c.sum()), _square(c, self.dtype)
        if not all(map(math.isfinite, (lo, hi, part, square))):
            self.finite = False
            return math.nan
        self.lo, self.hi = min(self.lo, lo), max(self.hi, hi)
        self.total += part
        self.sumsq += square
        self.n += c.numel()
        if lo > 0 or hi < 0:
            self.nonzero += c.numel()
        else:
            self.nonzero += int(c.bool().view(torch.uint8).sum(dtype=torch.int32))
        return square

    def stats(self, chunks: list[torch.Tensor]) -> Stats | None:
        """The statistics of `chunks`, all added; None when some element is not finite."""
        if not self.finite or not self.n:
            return None
        n, sumsq = self.n, self.sumsq
        mean = self.total / n
        m2 = sumsq - n * mean * mean
        if m2 < 1e-2 * sumsq:
            # The mean nearly cancels the norm: deviations about it, chunk by chunk, keep
            # the digits.
            m2 = 0.0
            for raw in chunks:
                c = raw if raw.dtype == self.dtype else raw.to(self.dtype)
                m2 += float(torch.linalg.vector_norm(c - mean)) ** 2
        return Stats(self.lo, self.hi, mean, m2, math.sqrt(sumsq), self.nonzero, n, nan=0)


_taken: TensorMemo[Stats] = TensorMemo()
"""Statistics `chunked_diff` took of a state tensor while it read it, for `taken_stats` (the
summary that follows the diff in a step's record), used only while the tensor is unchanged."""


def taken_stats(t: torch.Tensor) -> Stats | None:
    """The statistics `chunked_diff(t, ..., summarize=t)` took of `t`, if `t` has not
    changed in place since (its version counter); for every key whose value `t` is."""
    return _taken.get(t)


def forget_taken() -> None:
    """Drop the statistics no summary has asked for."""
    _taken.clear()


def chunked_diff(
    new: torch.Tensor, old: torch.Tensor, *, refresh: bool, summarize: torch.Tensor | None = None
) -> list[float]:
    """`segments.DIFF_COLUMNS` of `new` against its previous value `old` (same shape and dtype,
    a real dtype with values; `old` on the host or on `new`'s device), chunk by chunk, each
    chunk of `old` overwritten with `new`'s when `refresh`. On the CPU, with `summarize` (the
    tensor `new` was detached from), the summary's statistics of each chunk are taken too,
    for `taken_stats`.

    The same meaning as `key_diffs.key_diff`: NaN in both counts as equal, equal infinities
    too, integers compare in their own dtype, a NaN difference makes the largest |delta|
    NaN, and the relative change is ‖new - old‖ / ‖old‖ (`segments.FROM_ZERO` from all
    zeros). On the CPU a chunk whose difference is all finite takes `host_key_diff`'s few
    passes, in a scratch buffer; a chunk equal to its previous value is not written.
    """
    if new.device.type != "cpu":
        return _device_diff(new, old, refresh=refresh)
    changed, largest, delta_sq, old_sq = False, 0.0, 0.0, 0.0
    compared = segments.comparable(new[:0]).dtype
    wide = torch.promote_types(compared, torch.float32)
    summed = None
    # Only where the chunks are `host_stats`' own, so that a summary does not depend on
    # whether a diff took it.
    if summarize is not None and new.is_contiguous() and old.is_contiguous():
        summed = _Summed(work_dtype(new.dtype))
    scratch = torch.empty(chunk_numel(new), dtype=compared)
    exact_ints = new.element_size() == 8 and not new.is_floating_point()
    pairs = _pairs(new, old)
    for a_raw, b_raw in pairs:
        new_sq = summed.add(a_raw) if summed is not None else math.nan
        a, b = segments.comparable(a_raw), segments.comparable(b_raw)
        if a.numel() > scratch.numel():  # a row longer than a chunk
            scratch = torch.empty(a.numel(), dtype=compared)
        delta = torch.sub(a.reshape(-1), b.reshape(-1), out=scratch[: a.numel()])
        lo, hi = torch.aminmax(delta)
        c_largest = max(-float(lo), float(hi))
        if c_largest == 0 and not (exact_ints and not torch.equal(a_raw, b_raw)):
            # Unchanged: its values are the copy's, so its norm is the new values' when the
            # summary took it in the diff's dtype.
            same_dtype = summed is not None and summed.dtype == wide
            old_sq += new_sq if same_dtype and not math.isnan(new_sq) else _square(b, wide)
            continue
        if math.isfinite(c_largest) and c_largest != 0:
            c_changed, c_delta_sq = True, _square(delta, wide)
        else:
            # A NaN or an infinity (or int64 past 2**53, which float64 rounds): `key_diff`'s
            # masks.
            same = segments.exactly_same(a_raw, b_raw, a, b).reshape(-1)
            masked = torch.where(same, 0.0, delta)
            c_changed, c_largest = bool((~same).any()), float(masked.abs().amax())
            c_delta_sq = _square(masked, wide)
        changed = changed or c_changed
        # A NaN difference anywhere makes the largest NaN, as `amax` over the whole does
        # (`max` keeps a NaN that comes first).
        largest = math.nan if math.isnan(c_largest) else max(largest, c_largest)
        delta_sq += c_delta_sq
        old_sq += _square(b, wide)
        if refresh:
            b_raw.copy_(a_raw)
    if summed is not None and summarize is not None:
        stats = summed.stats(pieces(new, chunk_numel(new)))
        if stats is not None:
            _taken.put(summarize, stats)
    return [float(changed), largest if changed else 0.0, _relative(delta_sq, old_sq)]


def _pairs(new: torch.Tensor, old: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The chunks of `new` and the same elements of `old`."""
    numel = chunk_numel(new)
    return zip(pieces(new, numel, like=old), pieces(old, numel, like=new), strict=True)


def _square(x: torch.Tensor, wide: torch.dtype) -> float:
    """‖x‖², taken in `wide`: by a BLAS dot product where it applies (a flat float32 or
    float64 chunk), one pass that is both faster on the CPU than `vector_norm` and summed more
    precisely; by `vector_norm` otherwise, and where the dot product overflows."""
    if x.dtype == wide and x.dim() == 1 and x.dtype in (torch.float32, torch.float64):
        square = float(torch.dot(x, x))
        if math.isfinite(square):
            return square
    return float(torch.linalg.vector_norm(x, dtype=wide)) ** 2


def _device_diff(new: torch.Tensor, old: torch.Tensor, *, refresh: bool) -> list[float]:
    """`chunked_diff` off the CPU: each chunk's numbers stay on the device (no sync per chunk
    but the transfers of a copy kept on the host), read back once at the end."""
    rows: list[torch.Tensor] = []
    wide = torch.promote_types(segments.comparable(new[:0]).dtype, torch.float32)
    for a_raw, b_kept in _pairs(new, old):
        b_raw = b_kept.to(a_raw.device, non_blocking=True)
        a, b = segments.comparable(a_raw), segments.comparable(b_raw)
        same = segments.exactly_same(a_raw, b_raw, a, b)
        masked = torch.where(same, 0.0, a - b)
        rows.append(
            torch.stack(
                [
                    (~same).any().double(),
                    masked.abs().amax().double(),
                    torch.linalg.vector_norm(masked, dtype=wide).double() ** 2,
                    torch.linalg.vector_norm(b, dtype=wide).double() ** 2,
                ]
            )
        )
        if refresh:
            b_kept.copy_(a_raw)
    table = torch.stack(rows)
    changed, largest = table[:, 0].amax(), table[:, 1].amax()
    delta_sq, old_sq = table[:, 2].sum(), table[:, 3].sum()
    flag, top, d_sq, o_sq = torch.stack([changed, largest, delta_sq, old_sq]).tolist()
    return [flag, top, _relative(d_sq, o_sq)]


def _relative(delta_sq: float, old_sq: float) -> float:
    """‖new - old‖ / ‖old‖ from their squares: 0 when nothing changed, `segments.FROM_ZERO`
    from all zeros."""
    if delta_sq == 0:
        return 0.0
    if old_sq == 0:
        return segments.FROM_ZERO
    return math.sqrt(delta_sq) / math.sqrt(old_sq)
