"""The module tree as a snapshot: children, parameters, buffers, sharing, unregistered state."""

from __future__ import annotations

from typing import Any, TypeVar

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.contract.tensors import TensorInfo
from modscope.core.contract.tree import Inventory, ModuleInfo, Totals

# Re-exported: callers reach the tree's folding and the unregistered search through this module.
from modscope.core.filled import filled, plain_frozen
from modscope.core.gc_pause import collector_paused
from modscope.core.model.sibling_runs import SiblingRun, fold_runs, structure_signatures
from modscope.core.model.unregistered import find_unregistered, find_unregistered_among
from modscope.core.model.walk import subtree_tensors
from modscope.core.stats.tensor_stats import nested_shape

__all__ = [
    "SiblingRun",
    "build_inventory",
    "find_unregistered",
    "fold_runs",
    "structure_signatures",
]

EXTRA_REPR_CHARS = 80
LAZY_NOTE = "uninitialized (lazy): shape and size are known after the first forward"

# A shared module instance is listed under every path it is reachable by (like
# `named_modules(remove_duplicate=False)`), but a chain of diamonds makes that exponential:
# past this many entries per distinct module, further repeats are listed without their subtree.
_REPEAT_BUDGET_FACTOR = 4

# At most this many other paths in one TensorInfo.shared_with (Inventory.shared has them all).
SHARED_WITH_LIMIT = 64


_REPEAT_BUDGET_MIN = 10_000

_DTYPE_NAMES: dict[torch.dtype, str] = {}
_DEVICE_NAMES: dict[torch.device, str] = {}

_T = TypeVar("_T")

if all(plain_frozen(cls) for cls in (TensorInfo, ModuleInfo, Totals)):
    # `_snapshot` runs for every module, tensor and total of the tree: the dataclasses' own
    # `__init__` would be a large share of `build_inventory` on a model of thousands of modules.
    _snapshot = filled
else:  # pragma: no cover - the types changed shape; stay correct, only slower

    def _snapshot(cls: type[_T], values: dict[str, Any]) -> _T:
        return cls(**values)


def build_inventory(model: nn.Module, *, extra_reprs: bool = True) -> Inventory:
    """Snapshot `model`'s tree: every module path with its own parameters and buffers.

    Modules come in `named_modules(remove_duplicate=False)` order (root path ""), so a module
    instance registered under two paths appears under each. Two things differ from torch, which
    would recurse forever or explode: a child that is one of its own ancestors (a cycle) is
    listed at the back-edge path with no children and with that ancestor's totals, and once the
    listing passes a budget proportional to the number of distinct modules (repeated diamonds),
    further repeats are listed without children (their totals still cover their subtree, whose
    extra paths are then missing from `shared_with`). `shared_with` lists at most
    `SHARED_WITH_LIMIT` other paths. Totals count each tensor object once per subtree (tied
    weights count once).

    `extra_reprs=False` leaves every `ModuleInfo.extra_repr` empty: `tree` never shows them, and
    calling each module's `extra_repr()` is a noticeable share of the inventory of a large model.
    """
    # Tens of thousands of small acyclic snapshot objects would set off repeated full
    # collections over the model's own objects, a large share of the time on a large model.
    with collector_paused():
        walk = _Walk(model)
        return Inventory(
            modules=walk.module_infos(extra_reprs=extra_reprs),
            unregistered=tuple(
                find_unregistered_among(
                    walk.distinct, walk.first_path.keys(), walk.tensor_paths.keys()
                )
            ),
            shared=walk.shared_parameter_paths(),
        )


class _Entry:
    """One listed path of the walk (a module instance may have several)."""

    __slots__ = ("children", "depth", "module", "name", "parent", "path")

    def __init__(self, module: nn.Module, path: str, name: str, depth: int, parent: int) -> None:
        self.module = module
        self.path = path
        self.name = name
        self.depth = depth
        self.parent = parent
        self.children: list[int] = []


class _Walk:
    """The registered tree of one model: entries in preorder and where each tensor lives."""

    def __init__(self, model: nn.Module) -> None:
        self.entries: list[_Entry] = []
        # id -> first path of every distinct registered module, and (path, module) in that
        # order: what `walk.distinct_modules` lists, had on the way.
        self.first_path: dict[int, str] = {}
        self.distinct: list[tuple[str, nn.Module]] = []
        # id -> every full path of a registered parameter or buffer object.
        self.tensor_paths: dict[int, list[str]] = {}
        # id -> whether it is registered as a parameter, for objects under several paths only.
        self.repeated: dict[int, bool] = {}
        # Entries listed without their subtree: back-edges of a cycle, and repeats past the budget
        # (entry index -> index of the same instance's first, expanded entry).
        self.cycles: dict[int, int] = {}
        self.truncated: dict[int, int] = {}
        self._walk(model)

    def _walk(self, model: nn.Module) -> None:
        entries = self.entries
        first_path = self.first_path
        tensor_paths = self.tensor_paths
        repeated = self.repeated
        # Iterative preorder (torch's own walk is recursive and dies on a cycle or a very deep
        # chain); children are pushed reversed so they pop in registration order.
        first_index: dict[int, int] = {}
        stack: list[tuple[nn.Module, str, str, int, int]] = [(model, "", "", 0, -1)]
        while stack:
            module, path, name, depth, parent = stack.pop()
            index = len(entries)
            expanded = True
            key = id(module)
            if key in first_path:
                if self._is_ancestor(module, parent):
                    expanded = False
                    self.cycles[index] = first_index[key]
                elif index >= max(_REPEAT_BUDGET_MIN, _REPEAT_BUDGET_FACTOR * len(first_path)):
                    expanded = False
                    self.truncated[index] = first_index[key]
            else:
                first_path[key] = path
                first_index[key] = index
                self.distinct.append((path, module))
            entries.append(_Entry(module, path, name, depth, parent))
            if parent >= 0:
                entries[parent].children.append(index)
            prefix = path + "." if path else ""
            for registry, is_parameter in ((module._parameters, True), (module._buffers, False)):
                for tname, t in registry.items():
                    if t is None:
                        continue
                    tid = id(t)
                    paths = tensor_paths.get(tid)
                    if paths is None:
                        tensor_paths[tid] = [prefix + tname]
                    else:
                        paths.append(prefix + tname)
                        repeated.setdefault(tid, is_parameter)
            if expanded:
                kids = [(n, c) for n, c in module._modules.items() if c is not None]
                for cname, child in reversed(kids):
                    stack.append((child, prefix + cname, cname, depth + 1, index))

    def _is_ancestor(self, module: nn.Module, parent: int) -> bool:
        while parent >= 0:
            entry = self.entries[parent]
            if entry.module is module:
                return True
            parent = entry.parent
        return False

    def shared_parameter_paths(self) -> tuple[tuple[str, ...], ...]:
        return tuple(
            tuple(self.tensor_paths[tid])
            for tid, is_parameter in self.repeated.items()
            if is_parameter
        )

    def module_infos(self, *, extra_reprs: bool) -> tuple[ModuleInfo, ...]:
        entries = self.entries
        tensor_paths = self.tensor_paths
        n = len(entries)
        own_params: list[tuple[TensorInfo, ...]] = []
        own_buffers: list[tuple[TensorInfo, ...]] = []
        # Totals, bottom-up. A tensor under one path only is summed into [parameters, trainable,
        # buffers, bytes]; one under several paths is carried as an id set instead, so a tied
        # weight counts once per subtree however many names reach it.
        sums: list[list[int]] = []
        shared_below: list[set[int] | None] = []
        shared_infos: dict[int, TensorInfo] = {}
        # A repeat listed without its subtree still holds that subtree: carry it by id, and so
        # count those tensors by id wherever they are listed.
        unlisted = {i: {id(t) for t in _subtree_tensors(entries[i].module)} for i in self.truncated}
        by_id = set().union(*unlisted.values())
        for i, entry in enumerate(entries):
            module = entry.module
            if not module._parameters and not module._buffers:
                # Half the modules of a typical model (containers, activations) hold none.
                own_params.append(())
                own_buffers.append(())
                sums.append([0, 0, 0, 0])
                shared_below.append(unlisted.get(i))
                continue
            prefix = entry.path + "." if entry.path else ""
            non_persistent = module._non_persistent_buffers_set
            acc = [0, 0, 0, 0]
            ids: set[int] | None = None
            for registry, is_parameter, out in (
                (module._parameters, True, own_params),
                (module._buffers, False, own_buffers),
            ):
                if not registry:
                    out.append(())
                    continue
                infos = []
                for name, t in registry.items():
                    if t is None:
                        continue
                    tid = id(t)
                    path = prefix + name
                    paths = tensor_paths[tid]
                    info = _tensor_info(
                        t,
                        name,
                        path,
                        is_parameter,
                        is_parameter or name not in non_persistent,
                        _others(paths, path) if len(paths) > 1 else (),
                    )
                    infos.append(info)
                    if len(paths) > 1 or tid in by_id:
                        shared_infos.setdefault(tid, info)
                        if ids is None:
                            ids = set()
                        ids.add(tid)
                    else:
                        _add(acc, info)
                out.append(tuple(infos))
            if i in unlisted:
                ids = unlisted[i] if ids is None else ids | unlisted[i]
            sums.append(acc)
            shared_below.append(ids)

        totals: list[Totals] = [Totals()] * n
        # Equal totals share one object (every block of a repeated stack, every parameterless
        # activation): Totals is frozen, and most of a large model's modules repeat.
        distinct_totals: dict[tuple[int, ...], Totals] = {}
        for i in range(n - 1, -1, -1):
            acc = sums[i]
            ids = shared_below[i]
            for c in entries[i].children:
                child = sums[c]
                acc[0] += child[0]
                acc[1] += child[1]
                acc[2] += child[2]
                acc[3] += child[3]
                below = shared_below[c]
                if below:
                    if ids is None:
                        ids = shared_below[i] = set(below)
                    else:
                        ids |= below
            total = acc
            if ids:
                total = list(acc)
                for tid in ids:
                    _add(total, shared_infos[tid])
            key = tuple(total)
            shared_total = distinct_totals.get(key)
            if shared_total is None:
                shared_total = distinct_totals[key] = _snapshot(
                    Totals,
                    {
                        "parameters": total[0],
                        "trainable": total[1],
                        "buffers": total[2],
                        "bytes": total[3],
                    },
                )
            totals[i] = shared_total

        # A back-edge stands for a module that is its own ancestor: show that module's totals.
        for i, first in self.cycles.items():
            totals[i] = totals[first]

        extra_by_module: dict[int, str] = {}
        module_infos = []
        for i, entry in enumerate(entries):
            module = entry.module
            extra = ""
            if extra_reprs:
                module_id = id(module)
                known_extra = extra_by_module.get(module_id)
                if known_extra is None:
                    known_extra = extra_by_module[module_id] = _extra_repr(module)
                extra = known_extra
            module_infos.append(
                _snapshot(
                    ModuleInfo,
                    {
                        "path": entry.path,
                        "name": entry.name,
                        "type_name": type(module).__name__,
                        "training": module.training,
                        "parameters": own_params[i],
                        "buffers": own_buffers[i],
                        "children": tuple([entries[c].path for c in entry.children]),
                        "totals": totals[i],
                        "depth": entry.depth,
                        "extra_repr": extra,
                    },
                )
            )
        return tuple(module_infos)


def _others(paths: list[str], path: str) -> tuple[str, ...]:
    # Bounded: under repeated diamonds one tensor has thousands of paths, and listing them all
    # at each of them is quadratic.
    return tuple([p for p in paths[: SHARED_WITH_LIMIT + 1] if p != path][:SHARED_WITH_LIMIT])


def _subtree_tensors(module: nn.Module) -> list[torch.Tensor]:
    return [t for _, t, _ in subtree_tensors(module)]


def _tensor_info(
    t: torch.Tensor,
    name: str,
    path: str,
    is_parameter: bool,
    persistent: bool,
    shared_with: tuple[str, ...],
) -> TensorInfo:
    shape, dtype, device, numel, nbytes, note = _tensor_facts(t)
    return _snapshot(
        TensorInfo,
        {
            "name": name,
            "path": path,
            "shape": shape,
            "dtype": dtype,
            "device": device,
            "numel": numel,
            "nbytes": nbytes,
            "requires_grad": t.requires_grad,
            "is_parameter": is_parameter,
            "persistent": persistent,
            "shared_with": shared_with,
            "has_grad_fn": t.grad_fn is not None,
            "note": note,
        },
    )


_Facts = tuple[tuple[int, ...], str, str, int, int, "str | None"]


def _tensor_facts(t: torch.Tensor) -> _Facts:
    """Shape, dtype, device, numel, nbytes and a note; never raises."""
    dtype = _DTYPE_NAMES.get(t.dtype)
    if dtype is None:
        dtype = _DTYPE_NAMES[t.dtype] = str(t.dtype).replace("torch.", "", 1)
    device_obj = t.device
    device = _DEVICE_NAMES.get(device_obj)
    if device is None:
        device = _DEVICE_NAMES[device_obj] = str(device_obj)
    if is_lazy(t):
        return (), dtype, device, 0, 0, LAZY_NOTE
    try:
        numel = t.numel()
        if t.is_nested:  # jagged sizes are symbolic, and strided nested tensors refuse `shape`
            note = f"nested: {t.size(0):,} tensors"
            return nested_shape(t), dtype, device, numel, numel * t.element_size(), note
        return tuple(t.shape), dtype, device, numel, numel * t.element_size(), None
    except Exception as exc:  # nested and exotic subclass tensors refuse sizes
        return (), dtype, device, 0, 0, f"size unavailable: {type(exc).__name__}"


def _add(acc: list[int], info: TensorInfo) -> None:
    if info.is_parameter:
        acc[0] += info.numel
        if info.requires_grad:
            acc[1] += info.numel
    else:
        acc[2] += info.numel
    acc[3] += info.nbytes


def _extra_repr(module: nn.Module) -> str:
    try:
        text = str(module.extra_repr())
    except Exception as exc:  # user code; the tree must still print
        return f"<extra_repr() raised {type(exc).__name__}>"
    return " ".join(text.split())[:EXTRA_REPR_CHARS]
