"""Everything running a model can change, recorded to be put back (`Snapshot`; RNGs:
`core.rewind.rng`).

`Snapshot` records what a forward, a backward and an optimizer step can change through a model
(module attributes and registries, hook tables, train/eval flags, parameters, buffers, gradients,
plain tensor attributes and the containers that hold them, optimizer and scheduler state, the
RNG states) and puts it back.
"""

from __future__ import annotations

import dataclasses
import enum
from collections import deque
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.doctor.reachable import Reachable
from modscope.core.rewind.rng import RngState
from modscope.core.stats.tensor_stats import nested_shapes


class CloneLevel(enum.Enum):
    """Which tensor values a `Snapshot` copies (references and structure are always kept)."""

    NONE = "none"
    GRADS = "grads"
    BUFFERS = "buffers"
    ALL = "all"


@dataclasses.dataclass
class _SavedTensor:
    tensor: torch.Tensor
    cls: type
    data: torch.Tensor
    signature: tuple[Any, ...]
    version: int
    requires_grad: bool
    grad: torch.Tensor | None
    clone: torch.Tensor | None


def _signature(t: torch.Tensor) -> tuple[Any, ...]:
    if is_lazy(t):
        return ("uninitialized", t.dtype, t.device)
    try:
        return (t.dtype, t.device, tuple(t.shape), t.stride(), t.storage_offset(), t.data_ptr())
    except Exception:  # sparse and exotic layouts have no strides or pointer
        # A strided nested tensor has no `shape` either: its components' shapes stand in.
        return (t.dtype, t.device, nested_shapes(t) if t.is_nested else tuple(t.shape))


def _same(t: torch.Tensor, saved: torch.Tensor) -> bool:
    try:
        return t.shape == saved.shape and t.dtype == saved.dtype and torch.equal(t, saved)
    except Exception:  # layouts torch.equal does not support: restore to be safe
        return False


def _contents(container: Any) -> Any:
    if isinstance(container, dict):
        return dict(container)
    if isinstance(container, (set, list, deque)):
        return list(container)
    return None


def _put_back(container: Any, saved: Any) -> None:
    if isinstance(container, dict):
        if container.keys() != saved.keys() or any(container[k] is not v for k, v in saved.items()):
            container.clear()
            container.update(saved)
    elif isinstance(container, list):
        if len(container) != len(saved) or any(
            a is not b for a, b in zip(container, saved, strict=True)
        ):
            container[:] = saved
    elif isinstance(container, (set, deque)):
        container.clear()
        if isinstance(container, set):
            container.update(saved)
        else:
            container.extend(saved)


class Snapshot:
    """What running `model` (with its optimizer and scheduler) can change, to be put back.

    With `CloneLevel.NONE` values changed in place are not restored (only references, which
    is enough to guard the originals while a copy runs); `GRADS` restores the values of the
    gradients there are (what a copy that still shares code with the model would write into);
    `BUFFERS` restores the values of buffers and plain tensors; `ALL` also those of parameters,
    gradients and optimizer state. `touched()` tells whether a tensor was written since.
    """

    def __init__(
        self,
        model: nn.Module,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        *,
        clone: CloneLevel = CloneLevel.ALL,
        generators: tuple[torch.Generator, ...] = (),
    ) -> None:
        reach = Reachable(model)
        self.rng = RngState(generators)
        self._modules = [(m, type(m), dict(m.__dict__)) for m in reach.modules]
        containers: dict[int, Any] = {}
        for m in reach.modules:
            for value in m.__dict__.values():
                if isinstance(value, (dict, set, list, deque)):
                    containers.setdefault(id(value), value)
        for c in reach.containers:
            containers.setdefault(id(c), c)
        self._optimizer = optimizer
        self._scheduler = scheduler
        tensors: dict[int, tuple[torch.Tensor, bool]] = {}
        parameters = {id(t) for t in reach.tensors if isinstance(t, nn.Parameter)}

        def add(t: Any, values: bool) -> None:
            if isinstance(t, torch.Tensor) and id(t) not in tensors:
                tensors[id(t)] = (t, values)

        everything = clone is CloneLevel.ALL
        for t in reach.tensors:
            add(t, everything or (clone is CloneLevel.BUFFERS and id(t) not in parameters))
            if t.is_leaf and t.grad is not None:
                add(t.grad, everything or clone is CloneLevel.GRADS)
        if optimizer is not None:
            self._optimizer_dict = dict(optimizer.__dict__)
            self._groups = list(optimizer.param_groups)
            for group in optimizer.param_groups:
                containers.setdefault(id(group), group)
                for value in group.values():
                    add(value, everything)
                    if isinstance(value, list):
                        containers.setdefault(id(value), value)
            self._state = dict(optimizer.state)
            for key, per_param in optimizer.state.items():
                add(key, everything)
                if isinstance(per_param, dict):
                    containers.setdefault(id(per_param), per_param)
                    for value in per_param.values():
                        add(value, everything)
        if scheduler is not None:
            self._scheduler_dict = dict(scheduler.__dict__)
        self._containers = [(c, _contents(c)) for c in containers.values()]
        self._tensors = [self._save(t, values) for t, values in tensors.values()]

    @staticmethod
    def _save(t: torch.Tensor, values: bool) -> _SavedTensor:
        clone = None
        if values and not is_lazy(t):
            with torch.no_grad():
                clone = t.detach().clone()
        return _SavedTensor(
            tensor=t,
            cls=type(t),
            data=t.data,
            signature=_signature(t),
            version=t._version,
            requires_grad=t.requires_grad,
            grad=t.grad if t.is_leaf else None,
            clone=clone,
        )

    def touched(self) -> str | None:
        """What changed in a tensor since the snapshot (in place, its `.grad` or its data), in
        words, or None. In-place writes inside some kernels (BatchNorm's running statistics)
        leave no trace here."""
        for s in self._tensors:
            t = s.tensor
            if t._version != s.version or _signature(t) != s.signature:
                return f"a {type(t).__name__} of shape {list(t.shape)} was written"
            if t.is_leaf and t.grad is not s.grad:
                return f"the gradient of a tensor of shape {list(t.shape)} was set"
        return None

    def restore(self) -> None:
        """Put everything back as it was when the snapshot was taken."""
        for container, saved in self._containers:
            _put_back(container, saved)
        for module, cls, attrs in self._modules:
            if type(module) is not cls:
                module.__class__ = cls
            current = module.__dict__
            for key in [k for k in current if k not in attrs]:
                del current[key]
            for key, value in attrs.items():
                if current.get(key, attrs) is not value:
                    current[key] = value
        with torch.no_grad():
            for s in self._tensors:
                self._restore_tensor(s)
        if self._optimizer is not None:
            opt = self._optimizer
            _put_back(opt.__dict__, self._optimizer_dict)
            opt.param_groups[:] = self._groups
            _put_back(opt.state, self._state)
        if self._scheduler is not None:
            _put_back(self._scheduler.__dict__, self._scheduler_dict)
        self.rng.restore()

    @staticmethod
    def _restore_tensor(s: _SavedTensor) -> None:
        t = s.tensor
        if type(t) is not s.cls:
            t.__class__ = s.cls  # a lazy parameter materialized (UninitializedParameter)
        if _signature(t) != s.signature:
            t.data = s.data  # `.data` was replaced, or the tensor materialized or resized
        # The version counter misses some in-place writes (BatchNorm's running statistics are
        # updated inside its kernel, and their version stays), so compare the values too.
        if s.clone is not None and (t._version != s.version or not _same(t, s.clone)):
            if not t.is_nested and t.shape == s.clone.shape and t.dtype == s.clone.dtype:
                t.copy_(s.clone)
            else:
                t.data = s.clone
        if t.is_leaf:
            if t.requires_grad != s.requires_grad:
                t.requires_grad_(s.requires_grad)
            if t.grad is not s.grad:
                t.grad = s.grad
