"""Every hook dict of every module (and the global ones), to compare before and after."""

from __future__ import annotations

from typing import Any

from torch import nn
from torch.nn.modules import module as torch_module

MODULE_DICTS = (
    "_forward_pre_hooks",
    "_forward_pre_hooks_with_kwargs",
    "_forward_hooks",
    "_forward_hooks_with_kwargs",
    "_forward_hooks_always_called",
    "_backward_pre_hooks",
    "_backward_hooks",
    "_state_dict_hooks",
    "_state_dict_pre_hooks",
    "_load_state_dict_pre_hooks",
    "_load_state_dict_post_hooks",
)
GLOBAL_DICTS = (
    "_global_forward_pre_hooks",
    "_global_forward_hooks",
    "_global_forward_hooks_always_called",
    "_global_backward_pre_hooks",
    "_global_backward_hooks",
)


def hook_state(model: nn.Module) -> dict[str, Any]:
    """Hook ids and functions (by identity) of each dict, the full-backward flags, and the
    post-accumulate-grad hooks of every parameter."""
    state: dict[str, Any] = {}
    for path, m in model.named_modules():
        for name in MODULE_DICTS:
            state[f"{path}.{name}"] = [(k, id(v)) for k, v in getattr(m, name).items()]
        state[f"{path}._is_full_backward_hook"] = m._is_full_backward_hook
    for name, p in model.named_parameters():
        hooks = getattr(p, "_post_accumulate_grad_hooks", None) or {}
        state[f"{name}._post_accumulate_grad_hooks"] = [(k, id(v)) for k, v in hooks.items()]
        state[f"{name}._backward_hooks"] = [
            (k, id(v)) for k, v in (p._backward_hooks or {}).items()
        ]
    for name in GLOBAL_DICTS:
        state[name] = [(k, id(v)) for k, v in getattr(torch_module, name).items()]
    state["_global_is_full_backward_hook"] = torch_module._global_is_full_backward_hook
    return state
