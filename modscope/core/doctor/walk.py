"""Walking a model for the doctor: distinct modules, what a module holds, grouping by module."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable, Iterator
from typing import Any

import torch
from torch import nn

# What `nn.Module.__init__` itself puts in `__dict__`; everything else is the user's (or a torch
# subclass's) own attribute.
MODULE_INTERNALS = frozenset(nn.Module().__dict__)

# Deeper nesting than this below a module attribute is data, not a place where state hides
# (the inventory's bound, so both see the same objects).
MAX_CONTAINER_DEPTH = 6

GROUP_LIMIT = 10
"""More groups than this of one kind become a single finding at the root listing them all."""

_SCALARS = frozenset({int, float, complex, str, bytes, bool, type(None)})
CONTAINERS = (list, tuple, deque, set, frozenset, dict)


def distinct_modules(model: nn.Module) -> list[tuple[str, nn.Module]]:
    """Every registered module once, at its first path, in `named_modules()` (preorder) order.

    Iterative and cycle-safe (a module registered as its own descendant is listed once).
    """
    out: list[tuple[str, nn.Module]] = []
    seen: set[int] = set()
    stack: list[tuple[str, nn.Module]] = [("", model)]
    while stack:
        path, module = stack.pop()
        if id(module) in seen:
            continue
        seen.add(id(module))
        out.append((path, module))
        prefix = path + "." if path else ""
        kids = [(prefix + name, child) for name, child in module._modules.items() if child]
        stack.extend(reversed(kids))
    return out


def own_tensors(module: nn.Module) -> Iterator[tuple[str, torch.Tensor, bool]]:
    """`(name, tensor, is_parameter)` for a module's own registered parameters and buffers."""
    for name, p in module._parameters.items():
        if p is not None:
            yield name, p, True
    for name, b in module._buffers.items():
        if b is not None:
            yield name, b, False


def named_parameters_once(
    modules: Iterable[tuple[str, nn.Module]],
) -> dict[int, tuple[str, nn.Parameter]]:
    """Each distinct parameter object by id, with its first path (tied weights once)."""
    out: dict[int, tuple[str, nn.Parameter]] = {}
    for path, module in modules:
        prefix = path + "." if path else ""
        for name, p in module._parameters.items():
            if p is not None and id(p) not in out:
                out[id(p)] = (prefix + name, p)
    return out


def user_attributes(module: nn.Module) -> Iterator[tuple[str, Any]]:
    """The attributes in a module's `__dict__` that `nn.Module.__init__` did not create."""
    for name, value in module.__dict__.items():
        if name not in MODULE_INTERNALS and type(value) not in _SCALARS:
            yield name, value


def iter_container(value: Any) -> Iterator[Any]:
    """The members of a plain container (dict values), or nothing."""
    if isinstance(value, dict):
        yield from value.values()
    elif isinstance(value, CONTAINERS):
        yield from value


class Reachable:
    """Everything a forward pass can change through a model, found from the model alone.

    Modules (registered, and those kept in plain containers, with their subtrees), every tensor
    they hold (parameters, buffers, plain tensor attributes, tensors inside containers) and the
    mutable containers themselves, each once.
    """

    def __init__(self, model: nn.Module) -> None:
        self.modules: list[nn.Module] = []
        self.tensors: list[torch.Tensor] = []
        self.containers: list[list[Any] | dict[Any, Any] | set[Any] | deque[Any]] = []
        self._seen: set[int] = set()
        queue: deque[nn.Module] = deque([model])
        while queue:
            module = queue.popleft()
            if id(module) in self._seen:
                continue
            self._seen.add(id(module))
            self.modules.append(module)
            for child in module._modules.values():
                if child is not None:
                    queue.append(child)
            for _, t, _ in own_tensors(module):
                self._tensor(t)
            for _, value in user_attributes(module):
                self._scan(value, queue, 0)

    def _tensor(self, t: torch.Tensor) -> None:
        if id(t) not in self._seen:
            self._seen.add(id(t))
            self.tensors.append(t)

    def _scan(self, value: Any, queue: deque[nn.Module], depth: int) -> None:
        if isinstance(value, nn.Module):
            queue.append(value)
        elif isinstance(value, torch.Tensor):
            self._tensor(value)
        elif isinstance(value, CONTAINERS) and depth < MAX_CONTAINER_DEPTH:
            if id(value) in self._seen:
                return
            self._seen.add(id(value))
            if isinstance(value, (list, dict, set, deque)):
                self.containers.append(value)
            for item in iter_container(value):
                if type(item) not in _SCALARS:
                    self._scan(item, queue, depth + 1)


def group_by_module(
    modules: list[tuple[str, nn.Module]], selected: set[int]
) -> list[tuple[str, nn.Module | None, list[str]]]:
    """Group selected parameters (by id) under the outermost modules all of whose parameters
    are selected.

    Returns `(path, module, parameter paths)`: `module` is None for a parameter reported alone
    (its module also holds parameters that are not selected). Tied parameters count once, at
    their first path.
    """
    if not selected:
        return []
    first = named_parameters_once(modules)
    subtree: dict[int, list[int]] = {}
    # Postorder over the distinct tree (each module's subtree parameters, each id once).
    children: dict[int, list[nn.Module]] = {
        id(m): [c for c in m._modules.values() if c is not None] for _, m in modules
    }
    for _, module in reversed(modules):
        ids: dict[int, None] = {}
        for p in module._parameters.values():
            if p is not None:
                ids[id(p)] = None
        for child in children[id(module)]:
            for pid in subtree.get(id(child), ()):
                ids[pid] = None
        subtree[id(module)] = list(ids)
    groups: list[tuple[str, nn.Module | None, list[str]]] = []
    covered: set[int] = set()
    for path, module in modules:
        ids = subtree[id(module)]
        if not ids or all(pid in covered for pid in ids):
            continue
        if all(pid in selected for pid in ids):
            fresh = [pid for pid in ids if pid not in covered]
            groups.append((path, module, [first[pid][0] for pid in fresh]))
            covered.update(fresh)
            continue
        for p in module._parameters.values():
            if p is not None and id(p) in selected and id(p) not in covered:
                groups.append((first[id(p)][0], None, [first[id(p)][0]]))
                covered.add(id(p))
    return groups


def is_modscope_hook(fn: Any) -> bool:
    """True for a hook modscope itself registered (its function lives in a modscope module)."""
    fn = getattr(fn, "__func__", fn)
    return str(getattr(fn, "__module__", "") or "").startswith("modscope.")


def describe_callable(fn: Any) -> str:
    """`backward_hook (hooks.py:54)`: a hook's qualified name and where it is defined."""
    target = getattr(fn, "__func__", fn)
    target = getattr(target, "func", target)  # functools.partial
    name = getattr(target, "__qualname__", None) or type(target).__name__
    code = getattr(target, "__code__", None)
    if code is None:
        return name
    filename = code.co_filename.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{name} ({filename}:{code.co_firstlineno})"
