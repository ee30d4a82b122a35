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
    n = x.numel()
    lo, hi, total, sumsq, nonzero = math.inf, -math.inf, 0.0, 0.0, 0
    chunks = pieces(x, chunk_numel(x))
    for raw in chunks:
        c = raw if raw.dtype == dtype else raw.to(dtype)
        c_lo, c_hi = (float(v) for v in torch.aminmax(c))
        part, norm = float(c.sum()), float(torch.linalg.vector_norm(c))
        if not all(map(math.isfinite, (c_lo, c_hi, part, norm))):
            return None
        lo, hi = min(lo, c_lo), max(hi, c_hi)
        total += part
        sumsq += norm * norm
        if c_lo > 0 or c_hi < 0:
            nonzero += c.numel()
        else:
            nonzero += int(c.bool().view(torch.uint8).sum(dtype=torch.int32))
    mean = total / n
    m2 = sumsq - n * mean * mean
    if m2 < 1e-2 * sumsq:
        # The mean nearly cancels the norm: deviations about it, chunk by chunk, keep the digits.
        m2 = 0.0
        for raw in chunks:
            c = raw if raw.dtype == dtype else raw.to(dtype)
            m2 += float(torch.linalg.vector_norm(c - mean)) ** 2
    return Stats(lo, hi, mean, m2, math.sqrt(sumsq), nonzero, finite=n, nan=0)


def chunked_diff(new: torch.Tensor, old: torch.Tensor, *, refresh: bool) -> list[float]:
    """`segments.DIFF_COLUMNS` of `new` against its previous value `old` (same shape and dtype,
    a real dtype with values; `old` on the host or on `new`'s device), chunk by chunk, each
    chunk of `old` overwritten with `new`'s when `refresh`.

    The same meaning as `key_diffs.key_diff`: NaN in both counts as equal, equal infinities
    too, integers compare in their own dtype, a NaN difference makes the largest |delta|
    NaN, and the relative change is ‖new - old‖ / ‖old‖ (`segments.FROM_ZERO` from all
    zeros). On the CPU a chunk whose difference is all finite takes `host_key_diff`'s few
    passes; a chunk equal to its previous value takes one (`torch.equal`) and is not written.
    """
    if new.device.type != "cpu":
        return _device_diff(new, old, refresh=refresh)
    changed, largest, delta_sq, old_sq = False, 0.0, 0.0, 0.0
    wide = torch.promote_types(segments.comparable(new[:0]).dtype, torch.float32)
    for a_raw, b_raw in _pairs(new, old):
        if torch.equal(a_raw, b_raw):
            old_sq += _square_norm(segments.comparable(b_raw), wide)
            continue
        c_changed, c_largest, c_delta_sq, c_old_sq = _host_chunk(a_raw, b_raw, wide)
        changed = changed or c_changed
        # A NaN difference anywhere makes the largest NaN, as `amax` over the whole does
        # (`max` keeps a NaN that comes first).
        largest = math.nan if math.isnan(c_largest) else max(largest, c_largest)
        delta_sq += c_delta_sq
        old_sq += c_old_sq
        if refresh:
            b_raw.copy_(a_raw)
    return [float(changed), largest if changed else 0.0, _relative(delta_sq, old_sq)]


def _pairs(new: torch.Tensor, old: torch.Tensor) -> Iterator[tuple[torch.Tensor, torch.Tensor]]:
    """The chunks of `new` and the same elements of `old`."""
    numel = chunk_numel(new)
    return zip(pieces(new, numel, like=old), pieces(old, numel, like=new), strict=True)


def _square_norm(x: torch.Tensor, wide: torch.dtype) -> float:
    return float(torch.linalg.vector_norm(x, dtype=wide)) ** 2


def _host_chunk(
    a_raw: torch.Tensor, b_raw: torch.Tensor, wide: torch.dtype
) -> tuple[bool, float, float, float]:
    """Whether a host chunk changed, its largest |delta|, ‖delta‖² and ‖old‖²."""
    a, b = segments.comparable(a_raw), segments.comparable(b_raw)
    delta = a - b
    lo, hi = torch.aminmax(delta)
    largest = max(-float(lo), float(hi))
    exact_ints = a_raw.element_size() == 8 and not a_raw.is_floating_point()
    if math.isfinite(largest) and not (largest == 0 and exact_ints):
        if largest == 0:
            return False, 0.0, 0.0, _square_norm(b, wide)
        return True, largest, _square_norm(delta, wide), _square_norm(b, wide)
    # A NaN or an infinity (or int64 past 2**53, which float64 rounds): `key_diff`'s masks.
    same = segments.exactly_same(a_raw, b_raw, a, b)
    masked = torch.where(same, 0.0, delta)
    largest = float(masked.abs().amax())
    return bool((~same).any()), largest, _square_norm(masked, wide), _square_norm(b, wide)


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
