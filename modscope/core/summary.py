"""Tensor summaries: cheap capture when a hook fires, one batched host transfer per device later."""

from __future__ import annotations

import dataclasses
import functools
import math
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import torch

from modscope.core.types import TensorSummary

MAX_VALUES = 16
"""Tensors with at most this many elements carry their values (DESIGN section 2)."""

COPY_LIMIT = 4096
"""Off the host, tensors with at most this many elements are copied whole when captured and
summarized on the host by `resolve`: for them, a dozen GPU kernel launches cost far more than
one copy and the arithmetic."""

# Device types whose results are on the host already: reading them back is no sync, so the
# summary is finished at capture. Tests empty this to run the deferred paths on the CPU.
_HOST_DEVICE_TYPES = frozenset({"cpu"})

_SPARSE_LAYOUTS = frozenset(
    {torch.sparse_coo, torch.sparse_csr, torch.sparse_csc, torch.sparse_bsr, torch.sparse_bsc}
)


@dataclass(frozen=True)
class PendingSummary:
    """What `capture` saw: the host facts, and the statistics wherever they are.

    On the CPU `ready` holds the finished summary. Elsewhere a small tensor's whole data is
    copied into `data`; a larger one has its statistics in `parts`, small tensors still on its
    device, with `values` a copy of at most `MAX_VALUES` elements. The copies are private, so
    a later in-place change to the original does not alter what was seen.
    """

    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    layout: str
    requires_grad: bool
    grad_fn: str | None
    note: str | None = None
    ready: TensorSummary | None = None
    data: torch.Tensor | None = None
    parts: tuple[torch.Tensor, ...] = ()
    values: torch.Tensor | None = None
    counted: int = 0
    maybe_nonfinite: bool = False

    def _facts(self) -> dict[str, Any]:
        return {name: getattr(self, name) for name in _FACTS}

    def _on_device(self) -> tuple[torch.Tensor, ...]:
        """The tensors `resolve` brings to the host, in order."""
        if self.data is not None:
            return (self.data,)
        return self.parts if self.values is None else (*self.parts, self.values)


_FACTS = ("shape", "dtype", "device", "numel", "layout", "requires_grad", "grad_fn", "note")


@dataclass(frozen=True)
class _Stats:
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
def _torch_name(value: torch.dtype | torch.layout | torch.device) -> str:
    """`float32`, `sparse_coo`, `cuda:0`: torch's own names, without the `torch.` prefix."""
    return str(value).removeprefix("torch.")


def _stat_data(t: torch.Tensor) -> tuple[torch.Tensor | None, str | None]:
    """The dense values statistics run over, or None and a note saying why there are none."""
    if t.device.type == "meta":
        return None, "meta: no data"
    if t.layout in _SPARSE_LAYOUTS:
        stored = t._values() if t.layout == torch.sparse_coo else t.values()
        return stored, f"sparse: statistics over {stored.numel():,} stored values"
    if t.layout != torch.strided:
        return None, f"no statistics for layout {_torch_name(t.layout)}"
    if t.is_quantized:
        return t.dequantize(), "quantized: statistics of the dequantized values"
    return t, None


def _work_tensor(data: torch.Tensor) -> torch.Tensor:
    """A real floating tensor whose statistics are the summary's (magnitudes for complex)."""
    if data.is_complex():
        data = data.abs()
    if data.dtype in (torch.float32, torch.float64):
        return _in_memory_order(data)
    if data.is_floating_point():
        # fp16/bf16/fp8 reductions would round the results to 3 or fewer significant digits.
        return _in_memory_order(data.float())
    return _in_memory_order(data.to(torch.float64))


def _in_memory_order(x: torch.Tensor) -> torch.Tensor:
    """A view of `x` whose dims follow memory order: whole-tensor reductions ignore order, and
    some (aminmax) run ten times slower over a transposed view than a contiguous one."""
    if x.is_contiguous() or x.dim() < 2:
        return x
    order = sorted(range(x.dim()), key=lambda d: x.stride(d), reverse=True)
    permuted = x.permute(order)
    return permuted if permuted.is_contiguous() else x


def _host_stats(x: torch.Tensor) -> _Stats | None:
    """Statistics of a host tensor with no non-finite element, or None when there is one.

    A handful of fast reductions; the variance comes from the norm and the mean unless they
    nearly cancel, when a second pass about the mean keeps its digits.
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
    nonzero = int(torch.count_nonzero(x))
    return _Stats(lo, hi, mean, m2, norm, nonzero, finite=n, nan=0)


def _device_parts(x: torch.Tensor, maybe_nonfinite: bool) -> tuple[torch.Tensor, ...]:
    """Raw statistics of `x` as small tensors on its device, computed without a host sync.

    Branching on whether some element is non-finite would need the host, a sync on CUDA. So
    non-finite elements are always replaced by the mean of the finite ones: one `aminmax` and
    one `std_mean` then see finite values only, and the replacements add (next to) nothing
    to the variance; `_device_stats` takes out what rounding of that mean leaves.
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


def _device_stats(parts: Sequence[list[Any]], total: int, maybe_nonfinite: bool) -> _Stats:
    """`_Stats` from the host copy of `_device_parts`' tensors over `total` elements."""
    if not maybe_nonfinite:
        (lo, hi, mean, std), (nonzero,) = parts
        m2 = std * std * total
        return _Stats(lo, hi, mean, m2, _norm(m2, total, mean), int(nonzero), total, 0)
    (lo, hi, _, std, fill), (nonzero, finite, nan), (finite_sum,) = parts
    if finite == 0:
        return _Stats(math.nan, math.nan, math.nan, math.nan, math.nan, int(nonzero), 0, nan)
    mean = finite_sum / finite
    # The deviations about the mean of all `total` elements, replacements included, less the
    # replacements' share (Chan et al.'s merge of two groups, run backwards).
    replaced = total - finite
    m2 = max(std * std * total - (fill - mean) ** 2 * finite * replaced / total, 0.0)
    return _Stats(lo, hi, mean, m2, _norm(m2, finite, mean), int(nonzero), int(finite), int(nan))


def _norm(m2: float, n: int, mean: float) -> float:
    return math.sqrt(max(m2, 0.0) + n * mean * mean)


def _values_copy(t: torch.Tensor) -> torch.Tensor:
    """A private, contiguous copy of a small tensor's values, flattened in row-major order."""
    if t.layout != torch.strided:
        dense = t.to_dense()
    elif t.is_quantized:
        dense = t.dequantize()
    else:
        dense = t.clone(memory_format=torch.contiguous_format)
    return dense.resolve_conj().resolve_neg().reshape(-1).contiguous()


def capture(t: torch.Tensor) -> PendingSummary:
    """Record a tensor as it is now, without waiting for its device.

    On the CPU the summary is finished at once. Elsewhere nothing moves to the host until
    `resolve`: small tensors are copied on the device, larger ones reduced there to a few
    numbers. Runs under `torch.no_grad()` on `t.detach()`: it consumes no random numbers and
    changes neither the tensor, its `.grad` nor the autograd graph.
    """
    facts: dict[str, Any] = {
        "shape": tuple(t.shape),
        "dtype": _torch_name(t.dtype),
        "device": _torch_name(t.device),
        "numel": t.numel(),
        "layout": _torch_name(t.layout),
        "requires_grad": t.requires_grad,
        "grad_fn": type(t.grad_fn).__name__ if t.grad_fn is not None else None,
    }
    with torch.no_grad():
        x = t.detach()
        try:
            data, facts["note"] = _stat_data(x)
            if data is None or data.numel() == 0:
                return PendingSummary(**facts)
            if x.device.type in _HOST_DEVICE_TYPES:
                return PendingSummary(**facts, ready=_host_summary(facts, x, data))
            if data is x and x.numel() <= COPY_LIMIT:
                return PendingSummary(**facts, data=_values_copy(x))
            maybe_nonfinite = data.is_floating_point() or data.is_complex()
            return PendingSummary(
                **facts,
                parts=_device_parts(_work_tensor(data), maybe_nonfinite),
                values=_values_copy(x) if x.numel() <= MAX_VALUES else None,
                counted=data.numel(),
                maybe_nonfinite=maybe_nonfinite,
            )
        except (RuntimeError, NotImplementedError, TypeError) as exc:
            # Tensor subclasses and exotic dtypes may refuse a reduction: a debugger must
            # show what it can rather than fail the user's iteration.
            return PendingSummary(**_failed(facts, exc))


def _failed(facts: dict[str, Any], exc: Exception) -> dict[str, Any]:
    return facts | {"note": f"no statistics: {str(exc).splitlines()[0]}"}


def _host_summary(facts: dict[str, Any], x: torch.Tensor, data: torch.Tensor) -> TensorSummary:
    """The summary of a host tensor `x` whose statistics are those of `data`."""
    maybe_nonfinite = data.is_floating_point() or data.is_complex()
    work = _work_tensor(data)
    stats = _host_stats(work)
    if stats is None:
        raw = [p.tolist() for p in _device_parts(work, maybe_nonfinite)]
        stats = _device_stats(raw, data.numel(), maybe_nonfinite)
    values = _values_copy(x).tolist() if x.numel() <= MAX_VALUES else None
    return _summary(facts, stats, data.numel(), values)


def capture_many(tensors: Iterable[Any]) -> list[PendingSummary | None]:
    """`capture` each tensor; None (and anything that is not a tensor) stays None."""
    return [capture(t) if isinstance(t, torch.Tensor) else None for t in tensors]


def _summary(
    facts: dict[str, Any], stats: _Stats | None, counted: int, values: list[Any] | None
) -> TensorSummary:
    numel: int = facts["numel"]
    numbers: dict[str, Any] = {}
    if stats is None:
        # A sparse tensor with no stored value is all (implicit) zeros; meta has no data.
        zeros = numel if facts["layout"] != "strided" and facts["device"] != "meta" else 0
    else:
        zeros = numel - stats.nonzero
        numbers = {"nan": stats.nan, "inf": counted - stats.finite - stats.nan}
        if stats.finite > 0:
            numbers |= {
                "min": stats.lo,
                "max": stats.hi,
                "mean": stats.mean,
                "std": math.sqrt(stats.m2 / (stats.finite - 1)) if stats.finite > 1 else None,
                "norm": stats.norm,
            }
    if values is None and numel == 0:
        values = []
    return TensorSummary(
        **facts,
        zeros=zeros,
        values=tuple(values) if values is not None else None,
        **numbers,
    )


def _to_host(pending: Sequence[PendingSummary]) -> list[list[torch.Tensor]]:
    """Host copies of each pending's device tensors, with one transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, p in enumerate(pending):
        by_device.setdefault(p._on_device()[0].device, []).append(i)
    out: list[list[torch.Tensor]] = [[] for _ in pending]
    for indices in by_device.values():
        # Pieces of one dtype are joined first, so that little work is done per piece; all
        # dtypes then travel as raw bytes in one buffer: one copy (and one sync) per device,
        # exact for every dtype (int64 beyond 2**53 and complex values too).
        by_dtype: dict[torch.dtype, list[torch.Tensor]] = {}
        where: list[tuple[int, torch.dtype, int, int]] = []
        for i in indices:
            for piece in pending[i]._on_device():
                same = by_dtype.setdefault(piece.dtype, [])
                start = sum(p.numel() for p in same)
                where.append((i, piece.dtype, start, start + piece.numel()))
                same.append(piece)
        joined = {dtype: torch.cat(pieces) for dtype, pieces in by_dtype.items()}
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


def resolve(pending: Sequence[PendingSummary | None]) -> list[TensorSummary | None]:
    """Turn captured summaries into `TensorSummary` objects; None stays None.

    Waits for the devices: statistics and copies go to the host in one transfer per device.
    """
    deferred = [p for p in pending if p is not None and p._on_device()]
    host = iter(_to_host(deferred))
    out: list[TensorSummary | None] = []
    for p in pending:
        if p is None or p.ready is not None:
            out.append(p.ready if p is not None else None)
        elif not p._on_device():
            out.append(_summary(p._facts(), None, 0, None))
        elif p.data is not None:
            (copy,) = next(host)
            try:
                out.append(_host_summary(p._facts(), copy, copy))
            except (RuntimeError, NotImplementedError, TypeError) as exc:
                out.append(_summary(_failed(p._facts(), exc), None, 0, None))
        else:
            lists = [piece.tolist() for piece in next(host)]
            n_parts = len(p.parts)
            stats = _device_stats(lists[:n_parts], p.counted, p.maybe_nonfinite)
            values = lists[n_parts] if p.values is not None else None
            out.append(_summary(p._facts(), stats, p.counted, values))
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
