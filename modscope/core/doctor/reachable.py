"""The doctor's own walks: everything a run can change, parameters grouped by their module."""

from __future__ import annotations

from collections import deque
from collections.abc import Iterable
from typing import Any

import torch
from torch import nn

from modscope.core.model.walk import distinct_modules, held_objects, user_attributes

GROUP_LIMIT = 10
"""More groups than this of one kind become a single finding at the root listing them all."""

# The containers a run can change in place (tuples and frozensets cannot be).
_MUTABLE = (list, dict, set, deque)


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
        module_ids: set[int] = set()
        tensor_ids: set[int] = set()
        container_ids: set[int] = set()
        pending: deque[nn.Module] = deque([model])
        while pending:
            modules = [m for _, m in distinct_modules(pending.popleft(), seen=module_ids)]
            self.modules += modules
            for module in modules:
                # Registered tensors (None for an empty slot), then what the attributes hold:
                # tensors, modules (walked next, with their subtrees) and containers.
                held: list[Any] = [*module._parameters.values(), *module._buffers.values()]
                for name, value in user_attributes(module):
                    held += [obj for _, obj in held_objects(value, name, visited=container_ids)]
                for obj in held:
                    if isinstance(obj, torch.Tensor):
                        if id(obj) not in tensor_ids:
                            tensor_ids.add(id(obj))
                            self.tensors.append(obj)
                    elif isinstance(obj, nn.Module):
                        pending.append(obj)
                    elif isinstance(obj, _MUTABLE):
                        self.containers.append(obj)


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
        below = subtree[id(module)]
        if not below or all(pid in covered for pid in below):
            continue
        if all(pid in selected for pid in below):
            fresh = [pid for pid in below if pid not in covered]
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
