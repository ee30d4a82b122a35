"""Deep copies of model, optimizer and scheduler for the doctor, and whether a copy still runs
the original's code paths (a closure over the original's submodules, kept as an attribute)."""

from __future__ import annotations

import copy
import functools
import types
from collections import deque
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.doctor.reachable import Reachable, is_modscope_hook
from modscope.core.model.walk import (
    compiled_region,
    distinct_modules,
    eager_hook,
    hook_sites,
)

_HOOK_TABLES = (
    "_forward_pre_hooks",
    "_forward_hooks",
    "_backward_pre_hooks",
    "_backward_hooks",
)

# How far `shared_code` follows references: closures of closures, containers of functions.
_MAX_DEPTH = 4
_MAX_MEMBERS = 1000


class SharedCodePath(Exception):
    """Raised in a copy's forward when it calls one of the original's modules."""


def deep_copy(
    model: nn.Module, optimizer: torch.optim.Optimizer | None, scheduler: Any
) -> tuple[tuple[nn.Module, Any, Any], dict[int, Any]]:
    """`copy.deepcopy` of the three together, and its memo (original id -> copy). Raises what
    deepcopy raises (an attribute that cannot be copied: a lock, a file)."""
    memo: dict[int, Any] = {}
    # deepcopy refuses non-leaf tensors (a buffer that carries autograd history, the weight
    # the old weight_norm derives): copy their values without the history.
    with torch.no_grad():
        for t in Reachable(model).tensors:
            if t.grad_fn is not None:
                memo[id(t)] = t.detach().clone()
    copied = copy.deepcopy((model, optimizer, scheduler), memo)
    strip_modscope_hooks(copied[0])
    if optimizer is not None and copied[1] is not None:
        _rewrap_scheduler_step(optimizer, copied[1])
    return copied, memo


def strip_modscope_hooks(model: nn.Module) -> None:
    """Remove the module hooks modscope's own hook manager added (a copy must not report to the
    session it was copied from)."""
    for module in Reachable(model).modules:
        for table in _HOOK_TABLES:
            hooks = getattr(module, table, None)
            if hooks:
                for key in [k for k, fn in hooks.items() if is_modscope_hook(fn)]:
                    del hooks[key]


def _rewrap_scheduler_step(
    original: torch.optim.Optimizer, optimizer: torch.optim.Optimizer
) -> None:
    """An LR scheduler wraps `optimizer.step` in a closure holding a weak reference to *its*
    optimizer. Optimizer pickling drops that instance attribute (the scheduler then warns that
    step was overridden), and a copy that kept it would step the original: wrap the copy's own."""
    if not getattr(original.step, "_wrapped_by_lr_sched", False):
        return
    func = type(optimizer).step

    def wrapper(*args: Any, **kwargs: Any) -> Any:
        optimizer._opt_called = True  # type: ignore[attr-defined]
        return func(optimizer, *args, **kwargs)

    wrapper._wrapped_by_lr_sched = True  # type: ignore[attr-defined]
    optimizer.step = wrapper  # type: ignore[method-assign]


# -- sharing ------------------------------------------------------------------------------------


def shared_code(copied: nn.Module, original: nn.Module) -> str | None:
    """Where the copy still reaches the original's modules or tensors through code, in words,
    or None.

    `copy.deepcopy` copies functions by reference, so a lambda or closure kept as an attribute
    (minGPT's `self.mlpf = lambda x: m.dropout(m.c_proj(m.act(m.c_fc(x))))`) or as a hook
    still calls the original's layers: the copy's forward then runs them and its backward fills
    the original's `.grad`. Looks at the closures, defaults and bound objects of the functions
    in each copied module's attributes and hook tables.
    """
    reach = Reachable(original)
    originals = {id(m) for m in reach.modules} | {id(t) for t in reach.tensors}
    paths = {id(m): p for p, m in distinct_modules(copied)}
    for module in Reachable(copied).modules:
        where = paths.get(id(module))
        owner = where or f"a {type(module).__name__}"
        for name, value in module.__dict__.items():
            if name in ("_modules", "_parameters", "_buffers"):
                continue
            if _reaches(value, originals, 0, set()):
                return f"{owner}.{name} is a function over the original's modules"
    return None


def _references(obj: Any) -> Iterator[Any]:
    """What a function, bound method, partial or plain container refers to."""
    if isinstance(obj, types.FunctionType):
        for cell in obj.__closure__ or ():
            try:
                yield cell.cell_contents
            except ValueError:  # an empty cell
                continue
        yield from obj.__defaults__ or ()
        yield from (obj.__kwdefaults__ or {}).values()
    elif isinstance(obj, types.MethodType):
        yield obj.__self__
        yield obj.__func__
    elif isinstance(obj, functools.partial):
        yield obj.func
        yield from obj.args
        yield from obj.keywords.values()
    elif isinstance(obj, dict):
        yield from list(obj.values())[:_MAX_MEMBERS]
    elif isinstance(obj, (list, tuple, set, frozenset, deque)):
        yield from list(obj)[:_MAX_MEMBERS]


def _reaches(obj: Any, originals: set[int], depth: int, seen: set[int]) -> bool:
    if id(obj) in originals:
        return True
    if depth >= _MAX_DEPTH or id(obj) in seen or isinstance(obj, (nn.Module, torch.Tensor)):
        return False
    seen.add(id(obj))
    return any(_reaches(r, originals, depth + 1, seen) for r in _references(obj))


class Tripwire:
    """Forward-pre hooks on the original's modules, first in line, that stop a copy's forward
    which calls one of them (raising `SharedCodePath` before the module runs, so its running
    statistics and gradients stay as they were) and remember that it did."""

    def __init__(self, original: nn.Module) -> None:
        self.tripped: str | None = None
        self._handles: list[RemovableHandle] = []
        compiled = compiled_region(original)
        try:
            for path, module, inside in hook_sites(distinct_modules(original), compiled):
                hook = self._hook(path or "the model", type(module).__name__)
                hook = eager_hook(hook, compiled=inside)
                self._handles.append(module.register_forward_pre_hook(hook, prepend=True))
        except BaseException:
            self.remove()
            raise

    def _hook(self, path: str, type_name: str) -> Any:
        def trip(module: nn.Module, args: Any) -> None:
            self.tripped = self.tripped or f"the copy's forward called the original {path}"
            raise SharedCodePath(f"{path} ({type_name}) of the original model ran in a copy")

        return trip

    def remove(self) -> None:
        for handle in self._handles:
            handle.remove()
        self._handles.clear()
