"""Instances of frozen dataclasses made without their `__init__`, for the hot paths.

The `__init__` a frozen dataclass gets assigns each field through `object.__setattr__`, which is
slow next to handing the object its `__dict__` at once. Paths that make tens of thousands a step
(a large model's tensor summaries, its tree's snapshots, the hook events of a phase with hooks on
every module) use `filled` while `plain_frozen` holds.
"""

from __future__ import annotations

from dataclasses import MISSING, fields
from typing import Any, TypeVar

_T = TypeVar("_T")

_new = object.__new__
_set = object.__setattr__


def plain_frozen(cls: type) -> bool:
    """True when an instance with a given `__dict__` equals one `__init__` makes: the type has
    no `__slots__`, `__post_init__` or default factories."""
    return (
        "__slots__" not in vars(cls)
        and not hasattr(cls, "__post_init__")
        and all(f.default_factory is MISSING for f in fields(cls))
    )


def filled(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass `cls` (`plain_frozen`) whose fields are `values`
    (omitted fields read their class default). `values` must be a new dict: the object owns it."""
    obj = _new(cls)
    _set(obj, "__dict__", values)
    return obj
