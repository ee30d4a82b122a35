"""What one module output leaves on its device for the layers view: a few numbers (sum, sum of
squares, extremes, non-zero count, count at the rails), computed alone or, for small outputs,
together with the others of the iteration; then combined over calls with one host transfer per
device."""

from __future__ import annotations

import math
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn

from modscope.core.contract.layer_types import SATURATION_MARGIN, Activation
from modscope.core.stats import segments
from modscope.core.stats.segments import Segments
from modscope.core.stats.summary import flatten_tensors

_RELU_LIKE = (nn.ReLU, nn.ReLU6, nn.Threshold)
_PARTS = 6
"""What one call leaves on the device, as float64: sum, sum of squares, min, max, nonzero
elements, elements at the rails."""


def activation_of(module: nn.Module) -> Activation | None:
    """How a module's output is read: ReLU-like (zeros are dead units), saturating (bounded
    both sides), or neither. ReLU6 is a Hardtanh in torch, but its lower rail is ReLU's zero."""
    if isinstance(module, _RELU_LIKE):
        return Activation.RELU_LIKE
    if rails_of(module) is not None:
        return Activation.SATURATING
    return None


def rails_of(module: nn.Module) -> tuple[float, float] | None:
    """The output range of a saturating activation module, or None for any other module."""
    if isinstance(module, nn.ReLU6):
        return None
    if isinstance(module, nn.Sigmoid | nn.Hardsigmoid):
        return 0.0, 1.0
    if isinstance(module, nn.Tanh | nn.Softsign):
        return -1.0, 1.0
    if isinstance(module, nn.Hardtanh):
        return float(module.min_val), float(module.max_val)
    return None


def output_parts(x: torch.Tensor, rails: tuple[float, float] | None) -> torch.Tensor:
    """The `_PARTS` numbers of one output, as one float64 tensor on its device (no host sync).

    Runs under `torch.no_grad()` on `x.detach()`: it records no graph and consumes no random
    numbers. A rail counts what lies within `SATURATION_MARGIN` of the range from either end.
    """
    with torch.no_grad():
        x = x.detach()
        if not x.is_floating_point():
            x = x.to(torch.float64)
        total = x.sum(dtype=torch.float64)
        squares = torch.linalg.vector_norm(x, dtype=torch.float64) ** 2
        lo, hi = torch.aminmax(x)
        # count_nonzero: one kernel, where (x == 0).sum() writes a bool copy of x first.
        nonzero = torch.count_nonzero(x)
        parts = [total, squares, lo.double(), hi.double(), nonzero.double()]
        if rails is None:
            parts.append(torch.zeros((), dtype=torch.float64, device=x.device))
        else:
            low, high = rail_bounds(rails)
            parts.append(((x <= low) | (x >= high)).sum().double())
        return torch.stack(parts)


def first_floating(output: Any) -> torch.Tensor | None:
    """The output tensor a module's statistics describe: its first dense floating tensor with
    elements (a tuple's first, a `ModelOutput`'s first field), or None."""
    for t in flatten_tensors(output):
        if (
            t is not None
            and t.is_floating_point()
            and t.layout == torch.strided
            and t.device.type != "meta"
            and t.numel() > 0
        ):
            return t
    return None


def joined_later(x: torch.Tensor) -> bool:
    """True for an output small enough to be copied and summarized with others in `take`: for
    such a tensor a handful of reductions cost far more in launches than in arithmetic."""
    return x.numel() <= segments.SUMMARY_MAX_NUMEL and segments.joinable(x)


Small = tuple[int, torch.Tensor, "tuple[float, float] | None"]
"""A copied small output: its module's index, the copy, and the module's rails."""


def joined_parts(small: Sequence[Small]) -> list[tuple[int, int, torch.Tensor]]:
    """The `_PARTS` of each copied small output (module index, numel, parts): summarized
    together per device and dtype by `segments.summary_stats` (some twenty kernels for all of
    them) when there are `segments.MIN_TENSORS` or more, one by one otherwise."""
    groups: dict[tuple[torch.device, torch.dtype], list[Small]] = {}
    for item in small:
        groups.setdefault((item[1].device, item[1].dtype), []).append(item)
    out: list[tuple[int, int, torch.Tensor]] = []
    for members in groups.values():
        if len(members) < segments.MIN_TENSORS:
            out += [(i, c.numel(), output_parts(c, rails)) for i, c, rails in members]
            continue
        with torch.no_grad():
            parts = _joined_table(members)
        out += [(i, c.numel(), row) for (i, c, _), row in zip(members, parts, strict=True)]
    return out


def _joined_table(members: Sequence[Small]) -> torch.Tensor:
    """A `(len(members), _PARTS)` float64 table of the members' parts, computed together."""
    copies = [c for _, c, _ in members]
    flat = segments.flatten(copies)
    segs = Segments.of([c.numel() for c in copies], flat.device)
    table = segments.summary_stats(flat, segs)
    # lo, hi, total, m2, sumsq, nonzero, finite, nan -> sum, sumsq, lo, hi, nonzero, at rails;
    # a NaN or Inf (finite < numel) leaves the sum NaN, as `output_parts` does.
    sizes = torch.tensor(segs.sizes, dtype=torch.float64).to(flat.device, non_blocking=True)
    total = torch.where(table[:, 6] == sizes, table[:, 2], math.nan)
    at_rails = torch.zeros_like(total)
    bounds = [rail_bounds(rails) for _, _, rails in members]
    if any(rails is not None for _, _, rails in members):
        low, high = (
            torch.tensor(b, dtype=torch.float64).to(flat.device, non_blocking=True)
            for b in zip(*bounds, strict=True)
        )
        x = segments.as_float64(flat)
        hit = (x <= low.index_select(0, segs.ids)) | (x >= high.index_select(0, segs.ids))
        at_rails = segs.sum(hit.double())
    columns = [total, table[:, 4], table[:, 0], table[:, 1], table[:, 5], at_rails]
    return torch.stack(columns, 1)


def rail_bounds(rails: tuple[float, float] | None) -> tuple[float, float]:
    """The values at or beyond which an output is at a rail (never, without rails)."""
    if rails is None:
        return -math.inf, math.inf
    low, high = rails
    margin = SATURATION_MARGIN * (high - low)
    return low + margin, high - margin


def combine_calls(
    seen: Sequence[tuple[int, int, torch.Tensor]],
) -> dict[int, tuple[list[float], int, int]]:
    """Per module index: its parts summed over its calls (min and max combined as such), the
    elements they cover and the number of calls. One host transfer per device."""
    by_device: dict[torch.device, list[int]] = {}
    for i, (_, _, parts) in enumerate(seen):
        by_device.setdefault(parts.device, []).append(i)
    rows: list[list[float]] = [[] for _ in seen]
    for indices in by_device.values():
        on_host = torch.stack([seen[i][2] for i in indices]).cpu().tolist()
        for i, row in zip(indices, on_host, strict=True):
            rows[i] = row
    out: dict[int, tuple[list[float], int, int]] = {}
    for (index, numel, _), row in zip(seen, rows, strict=True):
        if index not in out:
            out[index] = (row, numel, 1)
            continue
        acc, n, calls = out[index]
        merged = [
            acc[0] + row[0],
            acc[1] + row[1],
            min(acc[2], row[2]),
            max(acc[3], row[3]),
            acc[4] + row[4],
            acc[5] + row[5],
        ]
        out[index] = (merged, n + numel, calls + 1)
    return out
