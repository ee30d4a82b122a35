"""Per-module output statistics while they are wanted: forward hooks note a few numbers per
call on the output's device, and `LayerWatch.take` brings one iteration's worth to the host in
one transfer per device (docs/design.md section 2, `run --layers`)."""

from __future__ import annotations

import math
import weakref
from collections.abc import Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

from modscope.core import segments
from modscope.core.layer_types import (
    SATURATION_MARGIN,
    Activation,
    LayerStats,
    LayerStep,
    OutputStats,
    ParamHealth,
)
from modscope.core.segments import Segments
from modscope.core.summary import flatten_tensors
from modscope.core.types import StepRecord
from modscope.core.walk import distinct_modules, refuses_hooks

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
            low, high = _rail_bounds(rails)
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


def _in_backward() -> bool:
    # Activation checkpointing re-runs module forwards during backward: not another output.
    current = getattr(torch._C, "_current_autograd_node", None)
    return current is not None and current() is not None


class LayerWatch:
    """Forward hooks on every module (ScriptModules, which refuse hooks, left out) that note
    each output's statistics while attached; `take(record)` turns one iteration's notes and the
    record's gradients and diff into a `LayerStep`.

    An observer: the hooks return None, compute under `torch.no_grad()` on detached outputs and
    draw no random numbers, so a run with them ends bit-identical to one without. Use as a
    context manager, or `attach()` then `detach()` in a `finally`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        self.modules = [(p, m) for p, m in distinct_modules(model) if not refuses_hooks(m)]
        self._rails = [rails_of(m) for _, m in self.modules]
        self._handles: list[RemovableHandle] = []
        self._seen: list[tuple[int, int, torch.Tensor]] = []
        # The parts of each output tensor seen in this iteration, by id: a container's output
        # is often its last child's very tensor (Sequential), whose parts are reused then.
        self._parts: dict[int, tuple[weakref.ref[torch.Tensor], int, torch.Tensor]] = {}
        self._small: list[tuple[int, torch.Tensor, tuple[float, float] | None]] = []

    @property
    def attached(self) -> bool:
        return bool(self._handles)

    def attach(self) -> None:
        """Add the hooks (again after `detach`); anything seen before is dropped."""
        self.discard()
        if self._handles:
            return
        try:
            for index, (_, module) in enumerate(self.modules):
                self._handles.append(module.register_forward_hook(self._hook(index)))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook this watch added; what it saw since the last `take` is dropped."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        self.discard()

    def discard(self) -> None:
        """Forget what was seen since the last `take` (an iteration abandoned or rewound)."""
        self._seen = []
        self._parts = {}
        self._small = []

    def __enter__(self) -> LayerWatch:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, index: int) -> Any:
        rails = self._rails[index]

        def note_output(module: nn.Module, args: Any, output: Any) -> None:
            if _in_backward():
                return
            x = first_floating(output)
            if x is None:
                return
            try:
                if _joined_later(x):
                    # Copied whole, summarized with the other small outputs in `take`.
                    self._small.append((index, x.detach().clone(), rails))
                else:
                    self._seen.append((index, x.numel(), self._parts_of(x, rails)))
            except (RuntimeError, NotImplementedError, TypeError):
                # A tensor subclass or exotic dtype may refuse a reduction: show no
                # statistics for it rather than fail the user's iteration.
                return

        return note_output

    def _parts_of(self, x: torch.Tensor, rails: tuple[float, float] | None) -> torch.Tensor:
        """`output_parts(x, rails)`, reused when the same tensor, unchanged since (its
        `_version`), was seen by a module with no rails (the rails column then differs)."""
        if rails is not None:
            return output_parts(x, rails)
        known = self._parts.get(id(x))
        if known is not None and known[0]() is x and known[1] == x._version:
            return known[2]
        parts = output_parts(x, None)
        self._parts[id(x)] = (weakref.ref(x), x._version, parts)
        return parts

    def take(self, record: StepRecord) -> LayerStep:
        """Every module's statistics for the iteration `record` describes (its gradients and
        diff give the learning signs); the outputs noted since the last take come to the host in
        one transfer per device."""
        seen, self._seen = self._seen, []
        small, self._small = self._small, []
        self._parts = {}
        outputs = combine_calls([*seen, *joined_parts(small)])
        stats = []
        unchanged = frozenset(record.diff.unchanged)
        for index, (path, module) in enumerate(self.modules):
            params = param_health(path, module, record, unchanged)
            output = outputs.get(index)
            stats.append(
                layer_stats(path, module, output, params, rails=self._rails[index] is not None)
            )
        return LayerStep(record.step, tuple(stats))


def _joined_later(x: torch.Tensor) -> bool:
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
    bounds = [_rail_bounds(rails) for _, _, rails in members]
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


def _rail_bounds(rails: tuple[float, float] | None) -> tuple[float, float]:
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


def layer_stats(
    path: str,
    module: nn.Module,
    output: tuple[list[float], int, int] | None,
    params: tuple[ParamHealth, ...],
    *,
    rails: bool,
) -> LayerStats:
    """One module's `LayerStats` from its combined output parts and its parameters' health."""
    stats = dead = saturated = None
    if output is not None:
        (total, squares, lo, hi, nonzero, at_rails), n, calls = output
        stats = output_stats(total, squares, lo, hi, n, calls)
        dead = (n - nonzero) / n
        saturated = at_rails / n if rails else None
    return LayerStats(
        path=path,
        type_name=type(module).__name__,
        output=stats,
        dead=dead,
        saturated=saturated,
        grad_norm=combined_norm([p.grad_norm for p in params]),
        update_ratio=_weight_ratio(module, params),
        params=params,
        activation=activation_of(module),
    )


def output_stats(
    total: float, squares: float, lo: float, hi: float, n: int, calls: int
) -> OutputStats:
    """Mean, standard deviation (over all n elements, not corrected) and largest magnitude;
    None where a NaN or Inf in the output leaves nothing meaningful."""
    if not all(map(math.isfinite, (total, squares, lo, hi))):
        return OutputStats(None, None, None, n, calls)
    mean = total / n
    variance = max(squares / n - mean * mean, 0.0)
    return OutputStats(mean, math.sqrt(variance), max(abs(lo), abs(hi)), n, calls)


def param_health(
    path: str, module: nn.Module, record: StepRecord, unchanged: frozenset[str] | None = None
) -> tuple[ParamHealth, ...]:
    """Each own parameter's gradient norm and update ratio, read from the step's record (its
    gradient summaries and `diff.rel_change`): nothing is computed again. `unchanged`: the
    record's `diff.unchanged` as a set, when the caller asks for many modules."""
    if unchanged is None:
        unchanged = frozenset(record.diff.unchanged)
    prefix = path + "." if path else ""
    out = []
    for name, p in module._parameters.items():
        if p is None:
            continue
        key = prefix + name
        grad = record.grads.get(key)
        norm = grad.norm if grad is not None else None
        out.append(ParamHealth(name, norm, update_ratio(key, record, unchanged)))
    return tuple(out)


def update_ratio(key: str, record: StepRecord, unchanged: frozenset[str]) -> float | None:
    """‖Δw‖ / ‖w‖ of the state key `key` over the step: `diff.rel_change` for a changed key,
    0.0 for an unchanged one (in `unchanged`, the record's `diff.unchanged`), None when there
    is no ratio (from all zeros, a shape change)."""
    rel = record.diff.rel_change
    if key in rel:
        return rel[key]
    return 0.0 if key in unchanged else None


def combined_norm(norms: Sequence[float | None]) -> float | None:
    """The norm of several tensors taken together, from their norms; None when none has one."""
    known = [n for n in norms if n is not None]
    if not known:
        return None
    return math.sqrt(math.fsum(n * n for n in known))


def _weight_ratio(module: nn.Module, params: tuple[ParamHealth, ...]) -> float | None:
    """The update ratio of the module's largest own parameter (the first of the largest)."""
    sizes = {
        name: 0 if is_lazy(p) else p.numel()
        for name, p in module._parameters.items()
        if p is not None
    }
    if not params:
        return None
    largest = max(params, key=lambda p: sizes.get(p.name, 0))
    return largest.update_ratio
