"""Instances of frozen dataclasses made without their `__init__`, for the hot paths.

The `__init__` a frozen dataclass gets assigns each field through `object.__setattr__`, which is
slow next to handing the object its `__dict__` at once. Paths that make tens of thousands a step
(a large model's tree's snapshots, the hook events of a phase with hooks on every module) use
`filled` while `plain_frozen` holds. A slotted frozen dataclass (`TensorSummary`: a third of
the memory of one with a `__dict__`, and tens of thousands in each step's record) is made by
`slotted_maker`.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import MISSING, fields, make_dataclass
from typing import Any, TypeVar, cast

_T = TypeVar("_T")

_new = object.__new__
_set = object.__setattr__


def plain_frozen(cls: type) -> bool:
    """True when an instance with a given `__dict__` equals one `__init__` makes: the type has
    no `__slots__`, `__post_init__` or default factories."""
    return "__slots__" not in vars(cls) and _assigns_only(cls)


def _assigns_only(cls: type) -> bool:
    """True when the dataclass `cls`'s `__init__` does nothing but assign the values given
    (or the defaults): no `__post_init__`, no default factories."""
    return not hasattr(cls, "__post_init__") and all(
        f.default_factory is MISSING for f in fields(cls)
    )


def filled(cls: type[_T], values: dict[str, Any]) -> _T:
    """An instance of the frozen dataclass `cls` (`plain_frozen`) whose fields are `values`
    (omitted fields read their class default). `values` must be a new dict: the object owns it."""
    obj = _new(cls)
    _set(obj, "__dict__", values)
    return obj


def slotted_maker(cls: type[_T]) -> Callable[..., _T]:
    """A function that makes an instance of the frozen, slotted dataclass `cls` from every
    field's value, faster than its `__init__`: a plain slotted dataclass of the same fields
    assigns them, then its `__post_init__` makes the object a `cls` (their slots are laid
    out alike, so Python allows it). `cls` itself when that does not hold (no `__slots__`,
    a `__post_init__`, default factories)."""
    if "__slots__" not in vars(cls) or not _assigns_only(cls):
        return cls
    names = [f.name for f in fields(cast(Any, cls))]

    def become(obj: Any) -> None:
        obj.__class__ = cls

    draft = make_dataclass(
        f"_{cls.__name__}Draft",
        names,
        namespace={"__post_init__": become},
        slots=True,
        eq=False,
        repr=False,
    )
    try:
        draft(**dict.fromkeys(names))
    except TypeError:  # pragma: no cover - a layout Python refuses to share: only slower
        return cls
    return cast("Callable[..., _T]", draft)
