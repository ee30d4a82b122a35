"""The recording codec: updates to strict JSON (`encode`) and back, checked (`decode`)."""

from __future__ import annotations

import dataclasses
import enum
import math
import sys
import typing
from collections.abc import Callable, Mapping
from types import UnionType
from typing import Any

from modscope.control import updates as up
from modscope.core.contract import findings, hook_spec, layer_types, steps, tensors, timelines, tree

MAX_DEPTH = 64
"""How deep the values of a line may nest (a real recording nests about 10 levels)."""


class RecordingError(Exception):
    """A folder that is not a recording this modscope can read; the message says why, and
    `file` and `line` where, when one file's line is at fault."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.file = file
        self.line = line


def _registry() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in (tensors, tree, steps, findings, hook_spec, timelines, layer_types, up):
        for name, value in vars(module).items():
            recordable = isinstance(value, type) and (
                dataclasses.is_dataclass(value) or issubclass(value, enum.Enum)
            )
            if recordable and value.__module__ == module.__name__:
                found[name] = value
    return found


_TYPES = _registry()


def encode(value: Any) -> Any:
    """`value` (an update, or anything inside one) as plain JSON-able data."""
    if isinstance(value, enum.Enum):  # first: str-valued enums are strs too
        return {"$e": type(value).__name__, "v": value.value}
    if value is None or isinstance(value, bool | int | str):
        return value
    if isinstance(value, float):
        return value if math.isfinite(value) else {"$f": repr(value)}
    if dataclasses.is_dataclass(value) and not isinstance(value, type):
        out: dict[str, Any] = {"$t": type(value).__name__}
        for f in dataclasses.fields(value):
            out[f.name] = encode(getattr(value, f.name))
        return out
    if isinstance(value, complex):
        return {"$c": [encode(value.real), encode(value.imag)]}
    if isinstance(value, Mapping):
        if all(isinstance(k, str) for k in value):
            return {"$m": {k: encode(v) for k, v in value.items()}}
        return {"$p": [[encode(k), encode(v)] for k, v in value.items()]}
    if isinstance(value, list | tuple):
        return [encode(v) for v in value]
    raise TypeError(f"cannot record a {type(value).__name__}")


_SCALARS = frozenset((type(None), bool, int, float, str))
"""What JSON reads that decodes as itself (checked by class: the hot path of a big line)."""


def decode(data: Any, *, depth: int = 0) -> Any:
    """The inverse of `encode`: arrays come back as tuples, mappings as dicts. Anything that
    `encode` does not write (an unknown tag, a field of the wrong type, a required field left
    out, nesting deeper than `MAX_DEPTH`) is a `RecordingError` saying what."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if depth >= MAX_DEPTH:
        raise RecordingError(f"values nested deeper than {MAX_DEPTH} levels")
    depth += 1
    if isinstance(data, list):
        return tuple(v if v.__class__ in _SCALARS else decode(v, depth=depth) for v in data)
    if not isinstance(data, dict):
        raise RecordingError(f"a {type(data).__name__} where a value belongs")
    if "$t" in data:
        return _decode_record(data, depth)
    if "$e" in data:
        cls = _TYPES.get(data["$e"]) if isinstance(data["$e"], str) else None
        if cls is None or not issubclass(cls, enum.Enum):
            raise RecordingError(f"unknown enum {shown(data['$e'])}")
        try:
            return cls(data.get("v"))
        except ValueError:
            raise RecordingError(f"{shown(data.get('v'))} is not a {cls.__name__}") from None
    if "$f" in data:
        text = data["$f"]
        if text not in ("nan", "inf", "-inf"):
            raise RecordingError(f"{shown(text)} is not a non-finite float (nan, inf, -inf)")
        return float(text)
    if "$c" in data:
        parts = data["$c"]
        if not (isinstance(parts, list) and len(parts) == 2):
            raise RecordingError(f"{shown(parts)} is not a complex number's [re, im]")
        re, im = (decode(v, depth=depth) for v in parts)
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (re, im)):
            raise RecordingError(f"{shown(parts)} is not a complex number's [re, im]")
        return complex(re, im)
    if "$m" in data:
        if not isinstance(data["$m"], dict):
            raise RecordingError(f"a $m mapping holds a {type(data['$m']).__name__}")
        return {
            k: v if v.__class__ in _SCALARS else decode(v, depth=depth)
            for k, v in data["$m"].items()
        }
    if "$p" in data:
        pairs = data["$p"]
        if not (isinstance(pairs, list) and all(_is_pair(p) for p in pairs)):
            raise RecordingError("a $p mapping that is not a list of [key, value] pairs")
        out = {}
        for key, item in pairs:
            key = decode(key, depth=depth)
            try:
                hash(key)
            except TypeError:
                raise RecordingError(f"a $p mapping with a {type(key).__name__} key") from None
            out[key] = decode(item, depth=depth)
        return out
    raise RecordingError(f"cannot read {shown(sorted(data))}")


def _decode_record(data: dict[str, Any], depth: int) -> Any:
    """A tagged dataclass: known fields decoded and checked against their types."""
    name = data["$t"]
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None or not dataclasses.is_dataclass(cls):
        raise RecordingError(f"unknown record type {shown(name)}")
    checks, required = _fields_of(cls)
    # Fields a later version of the same format added are left out, not an error.
    values = {
        k: v if v.__class__ in _SCALARS else decode(v, depth=depth)
        for k, v in data.items()
        if k in checks
    }
    if not required.issubset(values):
        missing = [f for f in checks if f in required and f not in values]
        listed = ", ".join(repr(f) for f in missing)
        plural = "s" if len(missing) > 1 else ""
        raise RecordingError(f"a {name} without its field{plural} {listed}")
    for key, value in values.items():
        if not checks[key](value):
            raise RecordingError(f"a {name} whose {key!r} is {shown(value)}")
    return cls(**values)


def _is_pair(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2


def shown(value: Any) -> str:
    """`value` for an error message: its repr, cut short."""
    text = repr(value)
    return text if len(text) <= 60 else text[:57] + "..."


Check = Callable[[Any], bool]
_FIELDS: dict[type, tuple[dict[str, Check], frozenset[str]]] = {}


def _fields_of(cls: type) -> tuple[dict[str, Check], frozenset[str]]:
    """A check of a decoded value against its type for each field of `cls`, and the fields a
    recording must hold (those with no default)."""
    found = _FIELDS.get(cls)
    if found is None:
        try:
            hints = typing.get_type_hints(
                cls, globalns=vars(sys.modules[cls.__module__]), localns=_TYPES
            )
        except Exception:  # an annotation this reader cannot resolve: not checked
            hints = {}
        fields = dataclasses.fields(cls)
        checks = {f.name: _check_for(hints.get(f.name, Any)) for f in fields}
        required = frozenset(
            f.name
            for f in fields
            if f.default is dataclasses.MISSING and f.default_factory is dataclasses.MISSING
        )
        found = _FIELDS[cls] = (checks, required)
    return found


def _plain_types(hint: Any) -> tuple[type, ...] | None:
    """The classes a value of type `hint` may be, where one `isinstance` checks it (a class,
    None, or a union of those); None for any other form."""
    if hint is type(None):
        return (type(None),)
    if hint is float:  # an int where a float belongs is a float's value (`lr=1`)
        return (int, float)
    if typing.get_origin(hint) in (UnionType, typing.Union):
        parts = [_plain_types(a) for a in typing.get_args(hint)]
        if all(p is not None for p in parts):
            return tuple(t for p in parts if p is not None for t in p)
        return None
    if isinstance(hint, type) and typing.get_origin(hint) is None and hint not in (Any, object):
        return (hint,)
    return None


def _check_for(hint: Any) -> Check:
    """A predicate that holds for a decoded value of type `hint` (containers checked item by
    item; a nested record was checked when it was decoded)."""
    plain = _plain_types(hint)
    if plain is not None:
        return lambda v: isinstance(v, plain)
    origin, args = typing.get_origin(hint), typing.get_args(hint)
    if origin in (UnionType, typing.Union):
        checks = [_check_for(a) for a in args]
        return lambda v: any(c(v) for c in checks)
    if origin is tuple and len(args) == 2 and args[1] is Ellipsis:
        items = _plain_types(args[0])
        if items is not None:
            return lambda v: isinstance(v, tuple) and all(isinstance(x, items) for x in v)
        item = _check_for(args[0])
        return lambda v: isinstance(v, tuple) and all(item(x) for x in v)
    if origin is tuple and args:
        each = [_check_for(a) for a in args]
        return lambda v: (
            isinstance(v, tuple)
            and len(v) == len(each)
            and all(c(x) for c, x in zip(each, v, strict=True))
        )
    if origin in (dict, Mapping) and len(args) == 2:
        key, value = _check_for(args[0]), _check_for(args[1])
        return lambda v: isinstance(v, dict) and all(key(k) and value(x) for k, x in v.items())
    if origin is not None and isinstance(origin, type):
        return lambda v: isinstance(v, origin)
    return lambda v: True  # Any, object, or a form this reader does not check
