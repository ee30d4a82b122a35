"""Rules that read the module tree and the optimizer as they are, without running anything."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Callable, Sequence
from typing import Any

import torch
from torch import nn
from torch.nn.modules import module as module_globals
from torch.nn.parameter import is_lazy

from modscope.core.contract.findings import Finding
from modscope.core.contract.tree import Inventory, Unregistered
from modscope.core.doctor import rules
from modscope.core.doctor.reachable import (
    GROUP_LIMIT,
    Reachable,
    group_by_module,
    is_modscope_hook,
    named_parameters_once,
)
from modscope.core.model.inventory import build_inventory
from modscope.core.model.walk import (
    CONTAINERS,
    MAX_CONTAINER_DEPTH,
    distinct_modules,
    iter_container,
    own_tensors,
    subtree_tensors,
)
from modscope.core.script.callables import callable_label

Modules = list[tuple[str, nn.Module]]


def static_findings(
    model: nn.Module,
    optimizer: torch.optim.Optimizer | None = None,
    *,
    inventory: Inventory | None = None,
) -> list[Finding]:
    """Every finding that reading the module tree (and the optimizer, if any) can make."""
    modules = distinct_modules(model)
    inv = inventory if inventory is not None else build_inventory(model)
    out = unregistered_findings(inv, modules)
    out += legacy_hook_findings(modules)
    out += buffer_history_findings(modules)
    out += nonfinite_state_findings(modules)
    out += mode_findings(modules)
    out += placement_findings(modules)
    if optimizer is not None:
        out += optimizer_findings(model, optimizer, modules)
    out += shared_findings(model, inv)
    return out


# -- unregistered state ---------------------------------------------------------------------------


def unregistered_findings(inv: Inventory, modules: Modules) -> list[Finding]:
    """`unregistered-*`: one finding per outermost object; a plain container attribute whose
    entries are all unregistered objects of one kind is reported once, as the attribute."""
    by_path = dict(modules)
    registered: set[int] = {id(m) for _, m in modules}
    for _, m in modules:
        registered.update(id(t) for _, t, _ in own_tensors(m))
    groups: dict[tuple[str, str], list[Unregistered]] = defaultdict(list)
    for u in inv.unregistered:
        groups[(u.owner, u.attribute)].append(u)
    out: list[Finding] = []
    for (owner, attribute), items in groups.items():
        module = by_path.get(owner)
        value = module.__dict__.get(attribute) if module is not None else None
        # "(in Sequential.__init__)" would point at torch, not at code the user can change.
        owner_type = (
            type(module).__name__
            if module is not None and not type(module).__module__.startswith("torch.")
            else None
        )
        path = f"{owner}.{attribute}" if owner else attribute
        for what in ("module", "parameter", "tensor"):
            chosen = [u for u in items if u.what == what]
            if not chosen:
                continue
            if not any(u.loses_state for u in chosen):
                container = type(value).__name__ if any(u.container for u in chosen) else None
                out.append(
                    rules.unregistered_stateless(
                        path if container else chosen[0].path,
                        attribute,
                        container,
                        [u.path for u in chosen],
                        [u.type_name for u in chosen],
                        owner_type,
                        [u.path for u in chosen if u.mode_dependent],
                    )
                )
                continue
            leaves = _homogeneous(value, what, registered)
            if leaves is not None:
                n_params = 0
                if what == "module":
                    n_params = len(
                        {id(t) for m in leaves for _, t, _ in subtree_tensors(m, buffers=False)}
                    )
                out.append(
                    rules.unregistered_container(
                        what,
                        path,
                        attribute,
                        type(value).__name__,
                        [u.path for u in chosen],
                        [u.type_name for u in chosen],
                        owner_type,
                        n_params,
                        nested=any(
                            isinstance(v, (list, tuple, dict, set)) for v in iter_container(value)
                        ),
                    )
                )
                continue
            for u in chosen:
                out.append(
                    rules.unregistered_item(
                        what, u.path, attribute, u.container, u.type_name, u.shape, owner_type, 0
                    )
                )
    return out


def _homogeneous(value: Any, what: str, registered: set[int]) -> list[Any] | None:
    """The leaves of a non-empty plain container (nested ones allowed) when every leaf is an
    unregistered object of kind `what`; None otherwise."""
    leaves: list[Any] = []
    seen: set[int] = set()

    def ok(v: Any, depth: int) -> bool:
        if isinstance(v, nn.Module | torch.Tensor):
            if id(v) in registered or _kind(v) != what:
                return False
            leaves.append(v)
            return True
        if not isinstance(v, CONTAINERS) or depth >= MAX_CONTAINER_DEPTH or id(v) in seen:
            return False
        seen.add(id(v))
        members = list(iter_container(v))
        return bool(members) and all(ok(m, depth + 1) for m in members)

    if not isinstance(value, CONTAINERS):
        return None
    return leaves if ok(value, 0) else None


def _kind(obj: Any) -> str:
    if isinstance(obj, nn.Module):
        return "module"
    return "parameter" if isinstance(obj, nn.Parameter) else "tensor"


# -- hooks, buffers, values -----------------------------------------------------------------------


def legacy_hook_findings(modules: Modules) -> list[Finding]:
    """`legacy-backward-hook`: a non-full `register_backward_hook` hook the user registered."""
    out: list[Finding] = []
    for path, module in modules:
        if module._backward_hooks and module._is_full_backward_hook is False:
            user = [h for h in module._backward_hooks.values() if not is_modscope_hook(h)]
            if user:
                out.append(
                    rules.legacy_backward_hook(
                        path,
                        type(module).__name__,
                        [callable_label(h) for h in user],
                        getattr(user[0], "__name__", "hook"),
                    )
                )
    global_hooks = getattr(module_globals, "_global_backward_hooks", {})
    if global_hooks and getattr(module_globals, "_global_is_full_backward_hook", None) is False:
        hooks = [callable_label(h) for h in global_hooks.values() if not is_modscope_hook(h)]
        if hooks:
            out.append(rules.global_legacy_backward_hook(hooks))
    return out


def buffer_history_findings(modules: Modules, step: int | None = None) -> list[Finding]:
    """`buffer-grad-history`: buffers holding a tensor with `grad_fn` or `requires_grad`."""
    out: list[Finding] = []
    seen: set[int] = set()
    for path, module in modules:
        prefix = path + "." if path else ""
        for name, b in module._buffers.items():
            if b is None or id(b) in seen:
                continue
            seen.add(id(b))
            if b.grad_fn is not None or b.requires_grad:
                grad_fn = type(b.grad_fn).__name__ if b.grad_fn is not None else None
                out.append(rules.buffer_grad_history(prefix + name, grad_fn, b.requires_grad, step))
    return out


def nonfinite_state_findings(modules: Modules) -> list[Finding]:
    """`nonfinite` at load: parameters or buffers already holding NaN or Inf."""
    named: list[tuple[str, torch.Tensor, bool]] = []
    seen: set[int] = set()
    for path, module in modules:
        prefix = path + "." if path else ""
        for name, t, is_param in own_tensors(module):
            if id(t) in seen or not _checkable(t):
                continue
            seen.add(id(t))
            named.append((prefix + name, t, is_param))
    if not named:
        return []
    flags = _all_finite([(t, is_param) for _, t, is_param in named])
    bad_params = [n for (n, _, is_p), ok in zip(named, flags, strict=True) if not ok and is_p]
    bad_buffers = [n for (n, _, is_p), ok in zip(named, flags, strict=True) if not ok and not is_p]
    out = []
    if bad_params:
        out.append(rules.nonfinite("parameters", bad_params, None))
    if bad_buffers:
        out.append(rules.nonfinite("buffers", bad_buffers, None))
    return out


def _checkable(t: torch.Tensor) -> bool:
    return (
        not is_lazy(t)
        and t.layout == torch.strided
        and not t.is_nested  # no isnan().any() for nested tensors
        and t.device.type != "meta"
        and (t.is_floating_point() or t.is_complex())
        and t.numel() > 0
    )


def _all_finite(tensors: Sequence[tuple[torch.Tensor, bool]]) -> list[bool]:
    """Whether each parameter is all finite and each buffer free of NaN (attention masks hold
    -inf by design).

    A tensor's norm is finite when all its elements are, so one fused `_foreach_norm` per
    device and dtype, with one host transfer, clears the usual all-finite case; the few
    tensors whose norm is not finite (or overflowed) are then looked at one by one.
    """
    groups: dict[tuple[torch.device, torch.dtype], list[int]] = defaultdict(list)
    for i, (t, _) in enumerate(tensors):
        groups[(t.device, t.dtype)].append(i)
    suspects: list[int] = []
    with torch.no_grad():
        for indices in groups.values():
            group = [tensors[i][0].detach() for i in indices]
            try:
                norms = torch.stack(torch._foreach_norm(group)).isfinite().tolist()
            except (RuntimeError, TypeError, AttributeError):
                norms = [False] * len(indices)
            suspects += [i for i, finite in zip(indices, norms, strict=True) if not finite]
        out = [True] * len(tensors)
        for i in suspects:
            t, is_param = tensors[i]
            t = t.detach()
            out[i] = bool(torch.isfinite(t).all() if is_param else ~torch.isnan(t).any())
    return out


def mode_findings(modules: Modules, step: int | None = None) -> list[Finding]:
    """`mode-mismatch`: the outermost submodules whose train/eval mode differs from the root's."""
    if not modules:
        return []
    root_training = modules[0][1].training
    training = {path: m.training for path, m in modules}
    out = []
    for path, module in modules[1:]:
        if module.training == root_training:
            continue
        parent = path.rsplit(".", 1)[0] if "." in path else ""
        if training.get(parent, root_training) != root_training:
            continue  # its parent is reported already, in the same mode
        out.append(
            rules.mode_mismatch(path, type(module).__name__, module.training, root_training, step)
        )
    return out


def placement_findings(modules: Modules) -> list[Finding]:
    """`device-mismatch` (parameters and buffers) and `dtype-mismatch` (floating parameters) of
    the tensors a module holds itself."""
    out = []
    for path, module in modules:
        tensors = list(own_tensors(module))
        devices = {str(t.device) for _, t, _ in tensors}
        if len(devices) > 1:
            placement = [f"{name} {t.device}" for name, t, _ in tensors]
            out.append(rules.device_mismatch(path, type(module).__name__, placement))
        floating = [(n, t) for n, t, is_p in tensors if is_p and t.is_floating_point()]
        if len({t.dtype for _, t in floating}) > 1:
            placement = [f"{n} {str(t.dtype).removeprefix('torch.')}" for n, t in floating]
            out.append(rules.dtype_mismatch(path, type(module).__name__, placement))
    return out


# -- optimizer ------------------------------------------------------------------------------------


def optimizer_findings(
    model: nn.Module,
    optimizer: torch.optim.Optimizer,
    modules: Modules,
    step: int | None = None,
    *,
    params: dict[int, tuple[str, nn.Parameter]] | None = None,
) -> list[Finding]:
    """`not-in-optimizer`, `frozen-in-optimizer` and `stale-optimizer`, compared by identity;
    `step` is the iteration after which they are looked for (None: at load). `params`:
    `named_parameters_once(modules)`, when the caller has it."""
    entries: list[tuple[str, torch.Tensor]] = []
    for g, group in enumerate(optimizer.param_groups):
        for i, p in enumerate(group.get("params", ())):
            if isinstance(p, torch.Tensor):
                entries.append((f"optimizer.param_groups[{g}]['params'][{i}]", p))
    in_optimizer = {id(p) for _, p in entries}
    if params is None:
        params = named_parameters_once(modules)
    out: list[Finding] = []

    missing = {pid for pid, (_, p) in params.items() if p.requires_grad and pid not in in_optimizer}
    out += grouped(
        group_by_module(modules, missing),
        lambda path, type_name, names: rules.not_in_optimizer(path, type_name, names, step),
    )
    frozen = {pid for pid, (_, p) in params.items() if not p.requires_grad and pid in in_optimizer}
    out += grouped(group_by_module(modules, frozen), rules.frozen_in_optimizer)
    stale = [(entry, p) for entry, p in entries if id(p) not in params]
    if stale:
        # Tensors the model holds outside its registered parameters (a Parameter in a plain
        # dict) are reported as unregistered; the optimizer holding them is a workaround.
        held = {id(t) for t in Reachable(model).tensors}
        stale = [(entry, p) for entry, p in stale if id(p) not in held]
    if stale:
        shapes = [f"{list(p.shape)} {str(p.dtype).removeprefix('torch.')}" for _, p in stale]
        out.append(rules.stale_optimizer(stale[0][0], [e for e, _ in stale], shapes, step))
    return out


def grouped(
    groups: list[tuple[str, nn.Module | None, list[str]]],
    make: Callable[[str, str | None, list[str]], Finding],
) -> list[Finding]:
    """One finding per group of `group_by_module`; past `GROUP_LIMIT` groups, one at the root
    that lists them all."""
    if len(groups) > GROUP_LIMIT:
        names = [n for _, _, names in groups for n in names]
        return [make("", "", names)]  # "the model: its N parameters (...)"
    return [
        make(path, type(m).__name__ if m is not None else None, names) for path, m, names in groups
    ]


# -- sharing --------------------------------------------------------------------------------------


def shared_findings(model: nn.Module, inv: Inventory) -> list[Finding]:
    """`shared-parameter`: one finding per tied Parameter, or one per module instance that is
    registered under several names (its parameters are all shared the same way)."""
    out: list[Finding] = []
    aliases: dict[tuple[str, ...], tuple[str, list[str]]] = {}
    for paths in inv.shared:
        alias = _module_alias(model, paths)
        if alias is None:
            out.append(rules.shared_parameter(paths))
            continue
        prefixes, suffix, type_name = alias
        entry = aliases.setdefault(prefixes, (type_name, []))
        entry[1].append(suffix)
    for prefixes, (type_name, names) in aliases.items():
        out.append(rules.shared_module(prefixes, type_name, names))
    return out


def _module_alias(
    model: nn.Module, paths: Sequence[str]
) -> tuple[tuple[str, ...], str, str] | None:
    """When every path reaches the parameter through one module instance registered under
    several names: (those names, the parameter's path below them, the module's type)."""
    split = [p.split(".") for p in paths]
    common = 0
    while all(len(s) > common + 1 for s in split) and len({s[-1 - common] for s in split}) == 1:
        common += 1
    # `common` trailing components are shared; at least the parameter's own name is.
    if common == 0 and len({s[-1] for s in split}) == 1:
        common = 1
    if common == 0:
        return None
    for keep in range(common, 0, -1):
        prefixes = tuple(".".join(s[: len(s) - keep]) for s in split)
        try:
            owners = [model.get_submodule(p) if p else model for p in prefixes]
        except AttributeError:
            continue
        if all(o is owners[0] for o in owners):
            suffix = ".".join(split[0][len(split[0]) - keep :])
            return prefixes, suffix, type(owners[0]).__name__
    return None
