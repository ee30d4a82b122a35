"""What a model holds that nn.Module never registered: modules, Parameters and tensors kept in
plain attributes and containers."""

from __future__ import annotations

from collections.abc import Collection, Iterable

import torch
from torch import nn
from torch.nn.parameter import is_lazy
from torch.nn.utils.prune import BasePruningMethod
from torch.nn.utils.spectral_norm import SpectralNorm
from torch.nn.utils.weight_norm import WeightNorm

from modscope.core.contract.tree import Unregistered
from modscope.core.model.modes import subtree_mode_matters
from modscope.core.model.walk import (
    distinct_modules,
    held_objects,
    own_tensors,
    subtree_tensors,
    user_attributes,
)

# Caches torch keeps of registered tensors that go stale by design: RNNBase._flat_weights holds
# the derived weight (not a registered tensor) once the weight is parametrized or weight-normed.
_TORCH_CACHES: tuple[tuple[type, frozenset[str]], ...] = (
    (nn.RNNBase, frozenset({"_flat_weights"})),
)

PLAIN_DATA_ATTRIBUTES = frozenset({"example_input_array"})
"""Attributes that hold plain data by a library's convention, never module state: Lightning's
`example_input_array` (a sample batch for summaries and export)."""


def find_unregistered(model: nn.Module) -> list[Unregistered]:
    """Modules, Parameters and tensors that `model` holds but `nn.Module` never registered.

    Looks at user attributes in each distinct module's `__dict__` (not torch's own hook tables
    and registries) and inside plain list/tuple/deque/set/dict containers there, up to
    `walk.MAX_CONTAINER_DEPTH` levels, without descending into modules. One entry per outermost
    object; objects reachable through registered children, parameters or buffers are never
    reported. Paths are the owner's path, the attribute, then Python subscripts for sequences and
    mappings (`blocks[0]`, `heads['q']`, `encoder.cache[1]['k']`) and `{i}` for the i-th member
    of a set in iteration order (sets have no subscript); a dict key with no literal form shows
    as `<TypeName>`. `container` is the type name of the attribute's value when the object sits
    in a container (the outermost one, which is what to replace with ModuleList/ModuleDict/
    ParameterList/ParameterDict), None for a direct attribute. Attributes that torch derives from
    registered tensors are skipped: old-style weight_norm/spectral_norm and pruning targets, and
    RNNs' `_flat_weights` cache (stale by design once a weight is parametrized), and
    `PLAIN_DATA_ATTRIBUTES` (Lightning's `example_input_array`). A module with no parameters
    and no buffers below it is marked `holds_state=False` (it loses only the mode and hooks),
    with `mode_dependent` saying whether its forward depends on the mode.
    """
    modules = distinct_modules(model)
    tensors = {id(t) for _, m in modules for _, t, _ in own_tensors(m)}
    return find_unregistered_among(modules, {id(m) for _, m in modules}, tensors)


def _derived_attributes(module: nn.Module) -> frozenset[str]:
    """Plain attributes torch recomputes from registered tensors before each forward."""
    names = set()
    for hook in module._forward_pre_hooks.values():
        if isinstance(hook, (WeightNorm, SpectralNorm)):
            names.add(hook.name)
        elif isinstance(hook, BasePruningMethod):
            names.add(hook._tensor_name)
    for cls, cached in _TORCH_CACHES:
        if isinstance(module, cls):
            names |= cached
    return frozenset(names)


def find_unregistered_among(
    modules: Iterable[tuple[str, nn.Module]],
    registered_modules: Collection[int],
    registered_tensors: Collection[int],
) -> list[Unregistered]:
    """What `find_unregistered` documents, given the distinct modules and the ids of every
    registered module and tensor."""
    reported: set[int] = set()
    visited: set[int] = set()
    found: list[Unregistered] = []
    for owner, module in modules:
        attributes = user_attributes(module)
        if not attributes:
            continue
        skip = _derived_attributes(module) | PLAIN_DATA_ATTRIBUTES
        prefix = owner + "." if owner else ""
        for attr, value in attributes:
            if attr in skip:
                continue
            for path, obj in held_objects(value, prefix + attr, visited=visited):
                key = id(obj)
                if key in reported:
                    continue
                if isinstance(obj, nn.Module):
                    if key in registered_modules:
                        continue
                    what = "module"
                elif isinstance(obj, torch.Tensor):
                    if key in registered_tensors:
                        continue
                    what = "parameter" if isinstance(obj, nn.Parameter) else "tensor"
                else:
                    continue  # a container: its members come next
                reported.add(key)
                stateless = what == "module" and not subtree_tensors(obj)
                found.append(
                    Unregistered(
                        path=path,
                        what=what,
                        type_name=type(obj).__name__,
                        owner=owner,
                        attribute=attr,
                        container=None if obj is value else type(value).__name__,
                        shape=None if what == "module" else _shape(obj),
                        holds_state=not stateless,
                        mode_dependent=stateless and subtree_mode_matters(obj),
                    )
                )
    return found


def _shape(t: torch.Tensor) -> tuple[int, ...]:
    if is_lazy(t):
        return ()
    try:
        return tuple(t.shape)
    except Exception:  # nested and exotic subclass tensors refuse sizes
        return ()
