"""One tensor's statistics: its facts, and min/max/mean/std/norm over its finite values (on
the host, or as a few numbers on its device), built into a `TensorSummary`."""

from __future__ import annotations

import functools
import math
import warnings
from collections.abc import Iterable, Sequence
from typing import Any, NamedTuple

import torch

from modscope.core.contract.tensors import TensorSummary
from modscope.core.filled import slotted_maker

_SPARSE_LAYOUTS = frozenset(
    {torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc}
)


class TensorFacts(NamedTuple):
    """What a summary says about a tensor besides its statistics (`TensorSummary`'s fields)."""

    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    layout: str
    requires_grad: bool
    grad_fn: str | None
    note: str | None = None


class Stats(NamedTuple):
    """Host statistics over the finite elements; `m2` is the sum of squared deviations."""

    lo: float
    hi: float
    mean: float
    m2: float
    norm: float
    nonzero: int
    finite: int
    nan: int


@functools.cache
def torch_name(value: torch.dtype | torch.layout | torch.device) -> str:
    """`float32`, `sparse_coo`, `cuda:0`: torch's own names, without the `torch.` prefix."""
    return str(value).removeprefix("torch.")


_INTEGER_OF_WIDTH = {1: torch.uint8, 2: torch.int16, 4: torch.int32, 8: torch.int64}


@functools.cache
def has_values(dtype: torch.dtype) -> bool:
    """True for a dtype whose elements torch converts to numbers (every float, integer, bool
    and complex dtype, float8 included); False for raw bits (`bits8`, `bits16`...), the
    sub-byte integers (`int4`, `uint3`...) and packed `float4_e2m1fn_x2`, which have no
    arithmetic at all, and for the quantized dtypes (see `bits_of`)."""
    if dtype.is_complex:
        return True
    try:
        with warnings.catch_warnings():
            warnings.simplefilter("ignore")  # quantized dtypes warn that they are deprecated
            torch.zeros(1, dtype=dtype).to(torch.float64)
    except (RuntimeError, NotImplementedError, TypeError):
        return False
    return True


def bits_of(t: torch.Tensor) -> torch.Tensor:
    """`t`'s elements as integers of their own width, to compare bit by bit where there is no
    arithmetic: `int_repr()` of a quantized tensor (a copy), else a view."""
    if t.is_quantized:
        return t.int_repr()
    return t.view(_INTEGER_OF_WIDTH[t.element_size()])


def nested_values(t: torch.Tensor) -> torch.Tensor:
    """The values of a nested tensor's components, each in row-major order, back to back in a
    new 1-D tensor (strided nested tensors refuse `clone`, `detach` and `shape`)."""
    parts = [c.reshape(-1) for c in t.unbind()]
    return torch.cat(parts) if parts else torch.empty(0, dtype=t.dtype, device=t.device)


def nested_shapes(t: torch.Tensor) -> tuple[tuple[int, ...], ...]:
    """The shape of each component of a nested tensor."""
    return tuple(tuple(c.shape) for c in t.unbind())


def nested_shape(t: torch.Tensor) -> tuple[int, ...]:
    """A nested tensor's shape as a summary shows it: its count of components, then the
    largest size along each of their dims (the shape `to_padded_tensor` gives)."""
    shapes = nested_shapes(t)
    return (len(shapes), *(max(dims) for dims in zip(*shapes, strict=True))) if shapes else (0,)


def stat_data(t: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """The dense values statistics run over, or None and a note saying why there are none."""
    if t.device.type == "meta":
        return None, "meta: no data"
    if t.is_nested:
        return nested_values(t), f"nested: statistics over the values of {t.size(0):,} tensors"
    if not t.is_quantized and not has_values(t.dtype):
        return None, f"{torch_name(t.dtype)}: no arithmetic; compared bit by bit"
    if t.layout in _SPARSE_LAYOUTS:
        stored = t._values() if t.layout == torch.sparse_coo else t.values()
        return stored, f"sparse: statistics over {stored.numel():,} stored values"
    if t.layout != torch.strided:
        return None, f"no statistics for layout {torch_name(t.layout)}"
    if t.is_quantized:
        return t.dequantize(), "quantized: statistics of the dequantized values"
    return t, None


def work_tensor(data: torch.Tensor) -> torch.Tensor:
    """A real floating tensor whose statistics are the summary's (magnitudes for complex)."""
    if data.is_complex():
        data = data.abs()
    dtype = work_dtype(data.dtype)
    return in_memory_order(data if data.dtype == dtype else data.to(dtype))


def work_dtype(dtype: torch.dtype) -> torch.dtype:
    """The dtype a real tensor's statistics are computed in: float32 and float64 their own,
    other floats float32 (fp16/bf16/fp8 reductions would round the results to 3 or fewer
    significant digits), integers and bool float64."""
    if dtype in (torch.float32, torch.float64):
        return dtype
    return torch.float32 if dtype.is_floating_point else torch.float64


def in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """A view of `x` whose dims follow memory order: whole-tensor reductions ignore order, and
    some (aminmax) run many times slower over a transposed view than a contiguous one."""
    if x.is_contiguous() or x.dim() < 2:
        return x
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    return permuted if permuted.is_contiguous() else x


def host_stats(x: torch.Tensor) -> Stats | None:
    """Statistics of a host tensor with no non-finite element, or None when there is one.

    A handful of fast reductions; the variance comes from the norm and the mean unless they
    nearly cancel, when a second pass about the mean keeps its digits; zeros are counted
    only where the extremes allow some (`_count_nonzero`).
    """
    n = x.numel()
    lo_t, hi_t = torch.aminmax(x)
    total, lo, hi = float(x.sum()), float(lo_t), float(hi_t)
    norm = float(torch.linalg.vector_norm(x))
    if not all(map(math.isfinite, (total, lo, hi, norm))):
        return None
    mean = total / n
    m2 = norm * norm - n * mean * mean
    if m2 < 1e-2 * norm * norm:
        m2 = float(torch.linalg.vector_norm(x - mean)) ** 2
    return Stats(lo, hi, mean, m2, norm, _count_nonzero(x, lo, hi), finite=n, nan=0)


BOOL_COUNT_MAX = 1 << 24
"""Elements up to which zeros are counted through a bool copy (16 MiB of it at most)."""


def _count_nonzero(x: torch.Tensor, lo: float, hi: float) -> int:
    """The nonzero elements of a finite host tensor whose extremes are `lo` and `hi`: all of
    them when the extremes leave out 0, without a pass. A smallest magnitude (`abs().amin()`)
    would decide more tensors, but its temporary costs more than the count on a step that
    allocates much memory. The count itself sums the bytes of a bool copy in int32, exact
    below 2^31 elements, and faster on the CPU than `count_nonzero` or `(x != 0).sum()`; past
    `BOOL_COUNT_MAX` the copy would be large."""
    if lo > 0 or hi < 0:
        return x.numel()
    if x.numel() <= BOOL_COUNT_MAX:
        return int(x.bool().view(torch.uint8).sum(dtype=torch.int32))
    return int(torch.count_nonzero(x))


def device_parts(x: torch.Tensor, maybe_nonfinite: bool) -> tuple[torch.Tensor, ...]:
    """Raw statistics of `x` as small tensors on its device, computed without a host sync.

    Branching on whether some element is non-finite would need the host, a sync on CUDA. So
    non-finite elements are always replaced by the mean of the finite ones: one `aminmax` and
    one `std_mean` then see finite values only, and the replacements add (next to) nothing
    to the variance; `device_stats` takes out what rounding of that mean leaves.
    """
    # Launches, not arithmetic, are the cost on a GPU: `count_nonzero` and `isfinite` each
    # launch several kernels where `(x != 0).sum()` and `x.abs() < inf` launch two.
    nonzero = (x != 0).sum()
    if not maybe_nonfinite:
        lo, hi = torch.aminmax(x)
        std, mean = torch.std_mean(x, correction=0)
        return torch.stack([lo, hi, mean, std]), nonzero.reshape(1)
    finite = x.abs() < math.inf  # NaN compares false
    count = finite.sum()
    nan = torch.isnan(x).sum()
    total = torch.where(finite, x, 0).sum(dtype=torch.float64)
    fill = (total / count).to(x.dtype)
    x = torch.where(finite, x, fill)
    lo, hi = torch.aminmax(x)
    std, mean = torch.std_mean(x, correction=0)
    return (
        torch.stack([lo, hi, mean, std, fill]),
        torch.stack([nonzero, count, nan]),
        total.reshape(1),
    )


def device_stats(parts: Sequence[list[Any]], total: int, maybe_nonfinite: bool) -> Stats:
    """`Stats` from the host copy of `device_parts`' tensors over `total` elements."""
    if not maybe_nonfinite:
        (lo, hi, mean, std), (nonzero,) = parts
        m2 = std * std * total
        return Stats(lo, hi, mean, m2, _norm(m2, total, mean), int(nonzero), total, 0)
    (lo, hi, _, std, fill), (nonzero, finite, nan), (finite_sum,) = parts
    if finite == 0:
        return Stats(math.nan, math.nan, math.nan, math.nan, math.nan, int(nonzero), 0, nan)
    mean = finite_sum / finite
    # The deviations about the mean of all `total` elements, replacements included, less the
    # replacements' share (Chan et al.'s merge of two groups, run backwards).
    replaced = total - finite
    m2 = max(std * std * total - (fill - mean) ** 2 * finite * replaced / total, 0.0)
    return Stats(lo, hi, mean, m2, _norm(m2, finite, mean), int(nonzero), int(finite), int(nan))


def _norm(m2: float, n: int, mean: float) -> float:
    return math.sqrt(max(m2, 0.0) + n * mean * mean)


def values_copy(t: torch.Tensor) -> torch.Tensor:
    """A private, contiguous copy of a small tensor's values, flattened in row-major order."""
    if t.is_nested:
        dense = nested_values(t)
    elif t.layout != torch.strided:
        dense = t.to_dense()
    elif t.is_quantized:
        dense = t.dequantize()
    else:
        dense = t.clone(memory_format=torch.contiguous_format)
    return dense.resolve_conj().resolve_neg().reshape(-1).contiguous()


def facts_of(t: torch.Tensor) -> TensorFacts:
    return TensorFacts(
        nested_shape(t) if t.is_nested else tuple(t.shape),
        torch_name(t.dtype),
        torch_name(t.device),
        t.numel(),
        torch_name(t.layout),
        t.requires_grad,
        type(t.grad_fn).__name__ if t.grad_fn is not None else None,
    )


def host_facts_of(t: torch.Tensor) -> TensorFacts:
    """`facts_of` a plain strided host tensor (`stacked_stats.stackable` said so): its device
    and layout go without asking torch (`t.device` builds a new object each time), for the
    tens of thousands a hook phase or a record of a large model sees."""
    grad_fn = t.grad_fn
    return TensorFacts(
        tuple(t.shape),
        torch_name(t.dtype),
        "cpu",
        t.numel(),
        "strided",
        t.requires_grad,
        type(grad_fn).__name__ if grad_fn is not None else None,
    )


def failed(facts: TensorFacts, exc: Exception) -> TensorFacts:
    return facts._replace(note=f"no statistics: {str(exc).splitlines()[0]}")


def build_summary(
    facts: TensorFacts, stats: Stats | None, counted: int, values: list[Any] | None
) -> TensorSummary:
    """The summary of a tensor with `facts`, and `stats` over `counted` elements (None: none)."""
    numel = facts.numel
    nan = inf = 0
    lo = hi = mean = std = norm = None
    if stats is None:
        # A sparse tensor with no stored value is all (implicit) zeros; meta has no data.
        zeros = numel if facts.layout != "strided" and facts.device != "meta" else 0
    else:
        zeros = numel - stats.nonzero
        nan, inf = stats.nan, counted - stats.finite - stats.nan
        if stats.finite > 0:
            lo, hi, mean, norm = stats.lo, stats.hi, stats.mean, stats.norm
            std = math.sqrt(stats.m2 / (stats.finite - 1)) if stats.finite > 1 else None
    if values is None and numel == 0:
        values = []
    # Keywords rather than `**facts._asdict()`: this runs once per tensor of every step.
    return _new_summary(
        shape=facts.shape,
        dtype=facts.dtype,
        device=facts.device,
        numel=numel,
        norm=norm,
        min=lo,
        max=hi,
        mean=mean,
        std=std,
        nan=nan,
        inf=inf,
        zeros=zeros,
        values=tuple(values) if values is not None else None,
        layout=facts.layout,
        requires_grad=facts.requires_grad,
        grad_fn=facts.grad_fn,
        note=facts.note,
    )


_new_summary = slotted_maker(TensorSummary)
"""A `TensorSummary` of every field's value, without its frozen `__init__` (`core.filled`),
which is slow on this hot path: a large model's step makes tens of thousands."""


def combined_norm(norms: Iterable[float | None]) -> float | None:
    """The norm of several tensors taken together, from their norms (the global gradient norm
    from each parameter's); None when none has one."""
    known = [n for n in norms if n is not None]
    if not known:
        return None
    return math.sqrt(math.fsum(n * n for n in known))
