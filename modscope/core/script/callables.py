"""Naming a function for people: its qualified name and where it is defined (no torch here)."""

from __future__ import annotations

import functools
import inspect
from collections.abc import Callable
from typing import Any

# Modules whose name says nothing: a model script (loaded as `__modscope__`) and a program run
# as a script. Functions defined there are named without it.
_ANONYMOUS_MODULES = ("__modscope__", "__main__")


def describe_callable(fn: Callable[..., Any]) -> tuple[str, str | None]:
    """A function's qualified name and `file:line` (None when unknown), looking through
    partials, `functools.wraps` wrappers and bound methods; a callable object is named by its
    class and located by its `__call__`."""
    target: Any = fn
    while isinstance(target, functools.partial):
        target = target.func
    target = inspect.unwrap(target) if callable(target) else target
    name = getattr(target, "__qualname__", None)
    if name is None:
        name = type(target).__qualname__
        target = type(target).__call__
    module = getattr(target, "__module__", None)
    qualname = f"{module}.{name}" if module and module not in _ANONYMOUS_MODULES else name
    code = getattr(target, "__code__", None)
    if code is not None:
        return qualname, f"{code.co_filename}:{code.co_firstlineno}"
    try:
        file = inspect.getsourcefile(target)
        _, line = inspect.getsourcelines(target)
    except (OSError, TypeError):
        return qualname, None
    return qualname, f"{file}:{line}" if file else None


def callable_label(fn: Callable[..., Any]) -> str:
    """`backward_hook (hooks.py:54)`: `describe_callable` on one line, the file by its name."""
    qualname, location = describe_callable(fn)
    if location is None:
        return qualname
    file, _, line = location.rpartition(":")
    name = file.replace("\\", "/").rsplit("/", 1)[-1]
    return f"{qualname} ({name}:{line})"
