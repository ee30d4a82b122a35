"""What a break condition points at and names: its module, parameters and source locations."""

from __future__ import annotations

import inspect
from collections.abc import Callable
from typing import Any

from torch import nn

from modscope.core.contract.break_spec import BreakCondition, BreakMetric, BreakSpecError
from modscope.core.contract.script_names import MISSING
from modscope.core.model.walk import (
    FULLGRAPH_WHY,
    all_parameter_paths,
    compiled_region,
    did_you_mean,
    module_at,
    refuses_hooks,
    sealed,
)
from modscope.core.script.loader import LoadedScript


def forward_location(module: nn.Module) -> str | None:
    """`file:line` where the module's class defines `forward` (None without Python source)."""
    fn = getattr(type(module), "forward", None)
    if fn is None:
        return None
    try:
        fn = inspect.unwrap(fn)
        file = inspect.getsourcefile(fn)
        _, line = inspect.getsourcelines(fn)
    except (TypeError, OSError, ValueError):
        return None
    return f"{file}:{line}" if file else None


def loss_source(script: LoadedScript) -> Callable[..., Any] | None:
    """The function of the script that computes the loss, to name where a loss broke."""
    for fn in (script.compute_loss, script.train_step, script.loss_fn):
        if fn is not None and fn is not MISSING and callable(fn):
            return fn
    return None


def module_name(path: str) -> str:
    """A module's path as a break names it, the root's empty one in words."""
    return path or "the root module"


def distinct_parameters(module: nn.Module) -> list[tuple[str, nn.Parameter]]:
    """Each trainable parameter once, at its first name."""
    seen: set[int] = set()
    out = []
    for name, p in all_parameter_paths(module):
        if p.requires_grad and id(p) not in seen:
            seen.add(id(p))
            out.append((name, p))
    return out


def find_module(model: nn.Module, c: BreakCondition) -> tuple[str, nn.Module]:
    """The module a condition names, as (path, module); `BreakSpecError` when there is none or
    the condition cannot watch it."""
    assert c.module is not None
    found = module_at(model, c.module)
    if found is None:
        hint = did_you_mean(model, c.module)
        raise BreakSpecError(f"break condition {str(c)!r}: no module {c.module!r}{hint}")
    path, module = found
    if c.metric is BreakMetric.OUTPUT_ABSMAX and refuses_hooks(module):
        raise BreakSpecError(
            f"break condition {str(c)!r}: {module_name(path)} is a ScriptModule; PyTorch refuses "
            "hooks on ScriptModules"
        )
    if c.metric is BreakMetric.OUTPUT_ABSMAX and sealed(module, compiled_region(model)):
        raise BreakSpecError(
            f"break condition {str(c)!r}: {module_name(path)} runs inside a "
            f"torch.compile(fullgraph=True) call: {FULLGRAPH_WHY}"
        )
    if c.metric is BreakMetric.GRAD_NORM and not distinct_parameters(module):
        raise BreakSpecError(
            f"break condition {str(c)!r}: {module_name(path)} has no trainable parameters, so no "
            "gradient norm"
        )
    return path, module
