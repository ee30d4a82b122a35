"""Every hook that can fire on a module, whoever registered it, and detaching a foreign one."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping
from typing import Any

from torch import nn
from torch.nn.modules import module as torch_module

from modscope.core.contract.hook_notes import BREAK_WATCH, LAYER_STATISTICS
from modscope.core.contract.hook_spec import POST_ACCUMULATE_REGISTRY, HookId, HookInfo
from modscope.core.hooks.manager import HookManager
from modscope.core.script.callables import describe_callable

# (kind shown, dict attribute on the module, the module-global dict of the same kind)
_MODULE_HOOKS = (
    ("forward-pre", "_forward_pre_hooks", "_global_forward_pre_hooks"),
    ("forward", "_forward_hooks", "_global_forward_hooks"),
    ("backward-pre", "_backward_pre_hooks", "_global_backward_pre_hooks"),
    ("backward", "_backward_hooks", "_global_backward_hooks"),
)


BREAKS_MODULE = "modscope.core.breaks"
"""The package whose modules hold the hooks of an armed break condition."""
LAYERS_MODULE = "modscope.core.layers.collector"
"""The module whose hooks gather the layers view's statistics (`LayerCollector`)."""


def _watch_of(fn: Callable[..., Any]) -> str | None:
    """The action of one of modscope's own watch hooks (an armed break condition's, the layers
    view's statistics), or None for any other hook."""
    module = getattr(fn, "__module__", "") or ""
    if module == BREAKS_MODULE or module.startswith(BREAKS_MODULE + "."):
        return BREAK_WATCH
    if module == LAYERS_MODULE:
        return LAYER_STATISTICS
    return None


def _owner(fn: Callable[..., Any], script: str | None) -> str:
    _, location = describe_callable(fn)
    if location and script:
        file = location.rsplit(":", 1)[0]
        if os.path.realpath(file) == os.path.realpath(script):
            return "script"
    module = getattr(fn, "__module__", "") or ""
    if module.startswith("torch"):
        return "torch"
    return "other"


def _flags(module: nn.Module, attr: str, hook_id: int) -> tuple[str, ...]:
    flags = []
    if attr == "_forward_pre_hooks" and hook_id in module._forward_pre_hooks_with_kwargs:
        flags.append("with_kwargs")
    if attr == "_forward_hooks":
        if hook_id in module._forward_hooks_with_kwargs:
            flags.append("with_kwargs")
        if hook_id in module._forward_hooks_always_called:
            flags.append("always_call")
    if attr == "_backward_hooks":
        flags.append("full" if module._is_full_backward_hook else "legacy")
    return tuple(flags)


def list_hooks(
    model: nn.Module,
    path: str,
    *,
    manager: HookManager | None = None,
    script: str | None = None,
) -> list[HookInfo]:
    """Every hook that can fire on the module at `path`: its own, the global module hooks, and
    post-accumulate-grad hooks on its parameters. modscope's own carry their action."""
    module = model.get_submodule(path) if path else model
    # An observer's registration carries several of modscope's hooks: a row for each.
    ours: dict[int, list[tuple[HookId, str, str]]] = {}
    if manager is not None:
        for hook in manager.attached.values():
            if hook.path != path:
                continue
            for handle in hook.handles:
                ours.setdefault(handle.id, []).append(
                    (hook.hook_id, str(hook.spec), hook.kind.value)
                )
    found: list[HookInfo] = []
    for kind, attr, global_attr in _MODULE_HOOKS:
        hooks: Mapping[int, Callable[..., Any]] = getattr(module, attr)
        for hook_id, fn in hooks.items():
            qualname, location = describe_callable(fn)
            if hook_id in ours:
                for modscope_id, spec, our_kind in ours[hook_id]:
                    flags = _flags(module, attr, hook_id)
                    if our_kind != kind and kind == "forward":
                        # observing gradients: a forward hook that adds tensor hooks each
                        # iteration (how it takes its arguments is the forward hook's business)
                        flags = ("via tensor hooks",)
                    found.append(
                        HookInfo(
                            modscope_id,
                            path,
                            our_kind,
                            "modscope",
                            qualname,
                            location,
                            action=spec,
                            flags=flags,
                        )
                    )
                continue
            watch = _watch_of(fn)
            found.append(
                HookInfo(
                    HookId(attr, hook_id),
                    path,
                    kind,
                    # modscope's own: an armed break condition's (b removes it), or the
                    # layers view's statistics (kept while the session lasts).
                    "modscope" if watch else _owner(fn, script),
                    qualname,
                    location,
                    action=watch,
                    flags=_flags(module, attr, hook_id),
                )
            )
        for hook_id, fn in getattr(torch_module, global_attr).items():
            qualname, location = describe_callable(fn)
            found.append(
                HookInfo(HookId(global_attr, hook_id), path, kind, "global", qualname, location)
            )
    # The registry itself, not named_parameters(), which a model may override.
    for name, param in list(module._parameters.items()):
        if param is None:
            continue
        for hook_id, fn in (getattr(param, "_post_accumulate_grad_hooks", None) or {}).items():
            qualname, location = describe_callable(fn)
            found.append(
                HookInfo(
                    HookId(POST_ACCUMULATE_REGISTRY, hook_id, param=name),
                    path,
                    "post-accumulate-grad",
                    _owner(fn, script),
                    qualname,
                    location,
                    target=name,
                )
            )
    return found


def detach_foreign(model: nn.Module, info: HookInfo) -> None:
    """Remove a hook modscope did not add (only when the user asks for it explicitly)."""
    module = model.get_submodule(info.module) if info.module else model
    attr, hook_id = info.hook_id.registry, info.hook_id.key
    if attr == POST_ACCUMULATE_REGISTRY:
        param = getattr(module, info.hook_id.param or "")
        param._post_accumulate_grad_hooks.pop(hook_id, None)
        return
    if info.hook_id.is_global:
        getattr(torch_module, attr).pop(hook_id, None)
        torch_module._global_forward_hooks_always_called.pop(hook_id, None)
        return
    getattr(module, attr).pop(hook_id, None)
    for extra in (
        "_forward_pre_hooks_with_kwargs",
        "_forward_hooks_with_kwargs",
        "_forward_hooks_always_called",
    ):
        getattr(module, extra).pop(hook_id, None)
    if attr == "_backward_hooks" and not module._backward_hooks:
        module._is_full_backward_hook = None
