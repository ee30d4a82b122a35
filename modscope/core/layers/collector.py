"""Per-module output statistics while they are wanted: forward hooks note a few numbers per
call on the output's device, and `LayerCollector.take` brings one iteration's worth to the host in
one transfer per device (docs/design.md section 2, `run --layers`)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.utils.hooks import RemovableHandle

from modscope.core.contract.layer_types import LayerStats, LayerStep, OutputStats, ParamHealth
from modscope.core.contract.steps import StepRecord
from modscope.core.layers.parts import (
    Small,
    activation_of,
    combine_calls,
    first_floating,
    joined_later,
    joined_parts,
    output_parts,
    rails_of,
)
from modscope.core.model.walk import (
    compiled_region,
    distinct_modules,
    eager_hook,
    hook_sites,
    in_backward,
)
from modscope.core.stats.tensor_memo import TensorMemo
from modscope.core.stats.tensor_stats import combined_norm


class LayerCollector:
    """Forward hooks on every module (ScriptModules, which refuse hooks, left out) that note
    each output's statistics while attached; `take(record)` turns one iteration's notes and the
    record's gradients and diff into a `LayerStep`.

    An observer: the hooks return None, compute under `torch.no_grad()` on detached outputs and
    draw no random numbers, so a run with them ends bit-identical to one without. Use as a
    context manager, or `attach()` then `detach()` in a `finally`.
    """

    def __init__(self, model: nn.Module) -> None:
        self.model = model
        sites = hook_sites(distinct_modules(model), compiled_region(model))
        self.modules = [(path, module) for path, module, _ in sites]
        self._inside = [inside for _, _, inside in sites]
        self._rails = [rails_of(m) for _, m in self.modules]
        self._handles: list[RemovableHandle] = []
        self._seen: list[tuple[int, int, torch.Tensor]] = []
        # The parts of each output tensor seen in this iteration, by id: a container's output
        # is often its last child's very tensor (Sequential), whose parts are reused then.
        self._parts: TensorMemo[torch.Tensor] = TensorMemo()
        self._small: list[Small] = []

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
                hook = eager_hook(self._hook(index), compiled=self._inside[index])
                self._handles.append(module.register_forward_hook(hook))
        except BaseException:
            self.detach()
            raise

    def detach(self) -> None:
        """Remove every hook this collector added; what it saw since the last `take` is
        dropped."""
        handles, self._handles = self._handles, []
        for handle in handles:
            handle.remove()
        self.discard()

    def discard(self) -> None:
        """Forget what was seen since the last `take` (an iteration abandoned or rewound)."""
        self._seen = []
        self._parts.clear()
        self._small = []

    def __enter__(self) -> LayerCollector:
        self.attach()
        return self

    def __exit__(self, *exc: object) -> None:
        self.detach()

    def _hook(self, index: int) -> Any:
        rails = self._rails[index]

        def note_output(module: nn.Module, args: Any, output: Any) -> None:
            if in_backward():
                return
            x = first_floating(output)
            if x is None:
                return
            try:
                if joined_later(x):
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
        known = self._parts.get(x)
        if known is not None:
            return known
        parts = output_parts(x, None)
        self._parts.put(x, parts)
        return parts

    def take(self, record: StepRecord) -> LayerStep:
        """Every module's statistics for the iteration `record` describes (its gradients and
        diff give the learning signs); the outputs noted since the last take come to the host in
        one transfer per device."""
        seen, self._seen = self._seen, []
        small, self._small = self._small, []
        self._parts.clear()
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
