"""Reading a model's `state_dict` for a session, and the located error when it cannot be read:
a module cycle (torch recurses forever), a `get_extra_state` or state-dict hook that raises; and
the module a session inspects inside a (Distributed)DataParallel wrapper."""

from __future__ import annotations

import inspect
import linecache
import re

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DataParallel, DistributedDataParallel
from torch.nn.parameter import is_lazy

from modscope.core.contract.steps import Phase, UserError
from modscope.core.model.walk import find_cycle
from modscope.core.script.errors import ScriptError, is_user_file, user_error
from modscope.core.script.outputs import atomic_write, check_writable

_STATE_HINT = (
    "modscope reads model.state_dict() to show and diff the state; make state_dict() work "
    "(a get_extra_state() or state-dict hook that raises), then load the script again."
)


WRAPPERS = (DistributedDataParallel, DataParallel)
"""Modules that only run another (their `.module`): modscope inspects the one inside."""


def inspected_module(model: nn.Module) -> nn.Module:
    """The user's model inside any DistributedDataParallel / DataParallel wrappers (their
    `.module`), else `model`: what a session shows, hooks and diffs, so that no `module.`
    prefix appears in a state key. The wrapper itself still runs the forward (it averages the
    gradients across ranks and broadcasts buffers)."""
    while isinstance(model, WRAPPERS) and isinstance(model.module, nn.Module):
        model = model.module
    return model


def wrapper_note(runner: nn.Module) -> str | None:
    """What a person should know when the script's model is a DistributedDataParallel (or
    DataParallel) wrapper: modscope shows the model inside, the iterations call the wrapper."""
    if inspected_module(runner) is runner:
        return None
    does = "splits each batch across its devices"
    if isinstance(runner, DistributedDataParallel):
        does = "averages the gradients across ranks"
        if dist.is_available() and dist.is_initialized():
            does += f" (this is rank {dist.get_rank()} of {dist.get_world_size()})"
    return (
        f"{type(runner).__name__}: modscope shows the model inside it (model.module); the "
        f"iterations call the wrapper, which still {does}"
    )


def state_tensors(model: nn.Module) -> dict[str, torch.Tensor]:
    """The `state_dict` tensors (live, not detached), less lazy ones not yet initialised.
    Raises what the model's `state_dict()` raises."""
    return {
        key: value
        for key, value in model.state_dict(keep_vars=True).items()
        if isinstance(value, torch.Tensor) and not is_lazy(value)
    }


def initial_state(model: nn.Module, script: str | None) -> dict[str, torch.Tensor]:
    """`state_tensors(model)` when a session starts. Raises `ScriptError` with a load error
    located in the user's code when the state cannot be read: a module cycle (at the line that
    registers it, when the source shows one), or the exception `state_dict()` raised."""
    cycle = find_cycle(model)
    if cycle is not None:
        raise ScriptError(_cycle_error(model, *cycle, script))
    try:
        return state_tensors(model)
    except Exception as exc:
        raise ScriptError(
            user_error(exc, phase=Phase.LOAD, script=script, hint=_STATE_HINT)
        ) from exc


def _cycle_error(model: nn.Module, path: str, ancestor: str, script: str | None) -> UserError:
    owner_path, _, name = path.rpartition(".")
    owner = model.get_submodule(owner_path) if owner_path else model
    itself = f"{ancestor} (its own ancestor)" if ancestor else "the model itself"
    found = _registration(name, [_source_file(type(owner)), script])
    file, line = found if found is not None else (script, None)
    return UserError(
        message=(
            f"{path} is {itself}: a module registered as its own descendant makes "
            "state_dict(), named_modules(), .to() and every other walk of the tree recurse "
            "forever"
        ),
        exc_type="ModuleCycle",
        file=file,
        line=line,
        phase=Phase.LOAD,
        source_line=(linecache.getline(file, line).rstrip() or None) if file and line else None,
        hint=(
            f"Keep a reference without registering it: object.__setattr__(module, {name!r}, "
            "other) (or store it in a plain attribute of another object), or register a new "
            "instance."
        ),
    )


def _source_file(cls: type) -> str | None:
    try:
        file = inspect.getsourcefile(cls)
    except (TypeError, OSError):
        return None
    return file if file and is_user_file(file) else None


def _registration(name: str, files: list[str | None]) -> tuple[str, int] | None:
    """The first line in `files` that registers a child called `name`: `add_module("name", ...)`,
    `register_module("name", ...)` or `.name = ...`."""
    quoted = rf"""\(\s*['"]{re.escape(name)}['"]"""
    pattern = re.compile(
        rf"(add_module|register_module){quoted}|\.{re.escape(name)}\s*=(?!=)"
        if name.isidentifier()
        else rf"(add_module|register_module){quoted}"
    )
    for file in files:
        if not file:
            continue
        for number, text in enumerate(linecache.getlines(file), 1):
            if pattern.search(text):
                return file, number
    return None


def save_state(model: nn.Module, path: str) -> None:
    """Write `model.state_dict()` with `torch.save`, atomically
    (`core.script.outputs.atomic_write`). Raises `OutputError` when `path` cannot be written
    (a full disk said as such); a file already there keeps its mode."""
    check_writable(path)
    state = model.state_dict()
    size = sum(t.nelement() * t.element_size() for t in state.values() if torch.is_tensor(t))
    atomic_write(path, lambda f: torch.save(state, f), size=size)
