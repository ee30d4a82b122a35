"""Recordings: the controller's update stream written to a folder as it goes, and read back.

A recording is a folder holding `meta.json` (what was run: the script, its hash, the versions)
and `updates.jsonl`, one line per command: `{"updates": [...]}`, each update encoded by
`encode` (plain JSON: dataclasses tagged with their class, enums with their type, non-finite
floats and complex numbers spelled out, so the file is strict JSON). A line is appended and
flushed as soon as its command is done, so a run killed at any moment leaves a recording that
reads back up to its last complete command; a torn last line is dropped. Anything else a
writer does not write is refused with the file and line (`RecordingError`), and only regular
files are opened. Torch-free: a replay paints a recording without importing torch.

Format version 1 (`FORMAT_VERSION`); a reader refuses a newer version with a clear error.
docs/recording.md describes the format.
"""

from __future__ import annotations

import contextlib
import dataclasses
import enum
import json
import math
import os
import platform
import re
import stat
import sys
import time
import typing
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from types import UnionType
from typing import Any

from modscope.control import updates as up
from modscope.core import hook_spec, layer_types, timelines, types
from modscope.core.fmt import format_bytes
from modscope.core.version import VERSION

FORMAT = "modscope-recording"
FORMAT_VERSION = 1
META_FILE = "meta.json"
UPDATES_FILE = "updates.jsonl"
MAX_LINE_BYTES = 1 << 30
"""The longest line of `updates.jsonl` a reader takes (a step of a model with 100,000 tensors
is about 200 MiB); a longer one is an error, not an unbounded read."""
MAX_META_BYTES = 1 << 20
MAX_DEPTH = 64
"""How deep the values of a line may nest (a real recording nests about 10 levels)."""
RANK_FOLDER = re.compile(r"rank(0|[1-9][0-9]*)")


class RecordingError(Exception):
    """A folder that is not a recording this modscope can read; the message says why, and
    `file` and `line` where, when one file's line is at fault."""

    def __init__(self, message: str, *, file: str | None = None, line: int | None = None):
        super().__init__(message)
        self.file = file
        self.line = line


def _registry() -> dict[str, type]:
    found: dict[str, type] = {}
    for module in (types, hook_spec, timelines, layer_types, up):
        for name, value in vars(module).items():
            recordable = isinstance(value, type) and (
                dataclasses.is_dataclass(value) or issubclass(value, enum.Enum)
            )
            if recordable and value.__module__ == module.__name__:
                found[name] = value
    return found


_TYPES = _registry()


# -- the codec ------------------------------------------------------------------------------


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
            raise RecordingError(f"unknown enum {_shown(data['$e'])}")
        try:
            return cls(data.get("v"))
        except ValueError:
            raise RecordingError(f"{_shown(data.get('v'))} is not a {cls.__name__}") from None
    if "$f" in data:
        text = data["$f"]
        if text not in ("nan", "inf", "-inf"):
            raise RecordingError(f"{_shown(text)} is not a non-finite float (nan, inf, -inf)")
        return float(text)
    if "$c" in data:
        parts = data["$c"]
        if not (isinstance(parts, list) and len(parts) == 2):
            raise RecordingError(f"{_shown(parts)} is not a complex number's [re, im]")
        re, im = (decode(v, depth=depth) for v in parts)
        if not all(isinstance(x, int | float) and not isinstance(x, bool) for x in (re, im)):
            raise RecordingError(f"{_shown(parts)} is not a complex number's [re, im]")
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
    raise RecordingError(f"cannot read {_shown(sorted(data))}")


def _decode_record(data: dict[str, Any], depth: int) -> Any:
    """A tagged dataclass: known fields decoded and checked against their types."""
    name = data["$t"]
    cls = _TYPES.get(name) if isinstance(name, str) else None
    if cls is None or not dataclasses.is_dataclass(cls):
        raise RecordingError(f"unknown record type {_shown(name)}")
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
            raise RecordingError(f"a {name} whose {key!r} is {_shown(value)}")
    return cls(**values)


def _is_pair(item: Any) -> bool:
    return isinstance(item, list) and len(item) == 2


def _shown(value: Any) -> str:
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


# -- writing --------------------------------------------------------------------------------


def script_meta(
    script: str,
    *,
    versions: Mapping[str, str] | None = None,
    rank: int | None = None,
    world_size: int | None = None,
) -> dict[str, Any]:
    """What a recording says about its run: the script, its SHA-256, the versions, the time;
    under torchrun also the process's `rank` and the job's `world_size` (absent: one process)."""
    import hashlib

    digest = None
    try:
        with open(script, "rb") as f:
            digest = hashlib.sha256(f.read()).hexdigest()
    except OSError:
        pass
    return {
        "format": FORMAT,
        "version": FORMAT_VERSION,
        "script": os.path.abspath(script),
        "sha256": digest,
        "created": time.strftime("%Y-%m-%dT%H:%M:%S%z"),
        "versions": {
            "modscope": VERSION,
            "python": platform.python_version(),
            **(versions or {}),
        },
        **({"rank": rank, "world_size": world_size} if rank is not None else {}),
    }


class RecordingWriter:
    """Appends the update stream to a recording folder, one flushed line per command."""

    def __init__(self, folder: str, meta: Mapping[str, Any]) -> None:
        os.makedirs(folder, exist_ok=True)
        self.folder = folder
        tmp = os.path.join(folder, f".{META_FILE}.tmp")
        try:
            with open(tmp, "w", encoding="utf-8") as f:
                json.dump(dict(meta), f, indent=1, allow_nan=False)
            os.replace(tmp, os.path.join(folder, META_FILE))
        except BaseException:
            with contextlib.suppress(OSError):  # a full disk leaves no half-written meta behind
                os.unlink(tmp)
            raise
        # Unbuffered, so that a line a full disk cuts short can be cut off again (`write`) with
        # no bytes of it left in a buffer to land later.
        self._file = open(os.path.join(folder, UPDATES_FILE), "wb", buffering=0)  # noqa: SIM115
        self._whole = 0  # bytes of the lines written whole

    def write(self, updates: Sequence[up.Update]) -> None:
        """One command's updates, as one line, written at once (a run killed later keeps it).

        A write that fails (a full disk) raises its `OSError` after cutting off what it wrote
        of the line: the file still ends after its last whole line."""
        line = json.dumps({"updates": [encode(u) for u in updates]}, allow_nan=False)
        data = memoryview((line + "\n").encode("utf-8"))
        written = 0
        try:
            while written < len(data):
                written += self._file.write(data[written:]) or 0
        except OSError:
            with contextlib.suppress(OSError):
                self._file.truncate(self._whole)
                self._file.seek(self._whole)
            raise
        self._whole += len(data)

    def close(self) -> None:
        self._file.close()

    def __enter__(self) -> RecordingWriter:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


# -- reading --------------------------------------------------------------------------------


@dataclass(frozen=True)
class Recording:
    """A recording read back: its meta data and one tuple of updates per recorded command.

    `torn` is True when the last line was cut short (the run was killed while writing it);
    `rank` is the rank of a torchrun job's recording read from its `rankN` folder."""

    folder: str
    meta: Mapping[str, Any]
    batches: tuple[tuple[up.Update, ...], ...]
    torn: bool = False
    rank: int | None = None

    def updates(self) -> Iterator[up.Update]:
        for batch in self.batches:
            yield from batch


def not_a_recording(
    folder: str, what: str, *, file: str | None = None, line: int | None = None
) -> RecordingError:
    """The error for a folder that cannot be replayed: "not a recording: FOLDER: WHAT"."""
    return RecordingError(f"not a recording: {folder}: {what}", file=file, line=line)


def read_meta(folder: str) -> dict[str, Any]:
    """The recording's meta data; `RecordingError` when `folder` is no recording this modscope
    reads (missing, not a recording, or written by a newer format)."""
    if not os.path.isdir(folder):
        what = "not a folder" if os.path.lexists(folder) else "no such folder"
        raise not_a_recording(folder, what)
    path = os.path.join(folder, META_FILE)
    try:
        with _open_file(folder, META_FILE) as f:
            raw = f.read(MAX_META_BYTES + 1)
    except FileNotFoundError:
        raise not_a_recording(
            folder,
            f"no {META_FILE}, so not a modscope recording "
            "(`modscope run SCRIPT --record DIR` writes one)",
        ) from None
    if len(raw) > MAX_META_BYTES:
        raise not_a_recording(folder, f"{META_FILE} is larger than any recording's", file=path)
    try:
        meta = json.loads(raw)
    except RecursionError:
        raise not_a_recording(folder, f"{META_FILE} is nested too deeply", file=path) from None
    except ValueError as exc:
        raise not_a_recording(folder, f"{META_FILE} cannot be read: {exc}", file=path) from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise not_a_recording(
            folder, f"{META_FILE} is not a modscope recording's meta data", file=path
        )
    version = meta.get("version")
    if not isinstance(version, int) or isinstance(version, bool) or version < 1:
        raise not_a_recording(folder, f"{META_FILE} has no format version", file=path)
    if version > FORMAT_VERSION:
        raise RecordingError(
            f"{folder} was written in recording format {version}; this modscope reads format "
            f"{FORMAT_VERSION} and older: upgrade modscope to replay it",
            file=path,
        )
    for key, kind in (("script", str), ("rank", int), ("world_size", int)):
        if key in meta and not isinstance(meta[key], kind):
            raise not_a_recording(folder, f"{META_FILE}: {key!r} is {_shown(meta[key])}", file=path)
    return meta


def read_ranks(folder: str) -> list[Recording]:
    """Every rank's recording under `folder`: the folder itself, or its `rank0`, `rank1`, ...
    (a run under torchrun), in rank order; a rank missing among them is left out (each
    `Recording.rank` says which it is). Other files in the folder (a writer's lock) are
    ignored."""
    if os.path.isdir(folder) and not os.path.lexists(os.path.join(folder, META_FILE)):
        try:
            names = os.listdir(folder)
        except OSError as exc:
            raise not_a_recording(folder, f"cannot be listed: {exc.strerror}") from None
        ranks = sorted(
            (int(match[1]), name) for name in names if (match := RANK_FOLDER.fullmatch(name))
        )
        if ranks:
            return [read_recording(os.path.join(folder, name), rank=r) for r, name in ranks]
    return [read_recording(folder)]


def read_recording(folder: str, *, rank: int | None = None) -> Recording:
    """Read a recording; a torn last line (a run killed mid-write) is dropped. Anything else
    that is not what `RecordingWriter` writes is a `RecordingError` naming the file and line."""
    meta = read_meta(folder)
    path = os.path.join(folder, UPDATES_FILE)
    batches: list[tuple[up.Update, ...]] = []
    torn = False
    try:
        f = _open_file(folder, UPDATES_FILE)
    except FileNotFoundError:
        return Recording(folder, meta, (), False, rank)
    with f:
        number = 0
        while raw := f.readline(MAX_LINE_BYTES + 1):
            number += 1
            where = f"{UPDATES_FILE}, line {number}"
            complete = raw.endswith(b"\n")
            if not complete and len(raw) > MAX_LINE_BYTES:
                limit = format_bytes(MAX_LINE_BYTES)
                raise not_a_recording(
                    folder, f"{where} is longer than {limit}", file=path, line=number
                )
            if not raw.strip():
                continue
            try:
                data = json.loads(raw)
            except RecursionError:
                raise not_a_recording(
                    folder, f"{where} is nested too deeply", file=path, line=number
                ) from None
            except ValueError:
                if not complete:  # the last line, cut short: the run ended while writing it
                    torn = True
                    break
                raise not_a_recording(
                    folder, f"{where} is not JSON", file=path, line=number
                ) from None
            try:
                batches.append(_batch_of(data))
            except RecordingError as exc:
                raise not_a_recording(folder, f"{where}: {exc}", file=path, line=number) from None
    return Recording(folder, meta, tuple(batches), torn, rank)


_UPDATE_TYPES = typing.get_args(up.Update)


def _batch_of(data: Any) -> tuple[up.Update, ...]:
    """One line's updates, checked to be updates."""
    if not isinstance(data, dict) or not isinstance(data.get("updates"), list):
        raise RecordingError('not an {"updates": [...]} line')
    batch = tuple(decode(u) for u in data["updates"])
    for u in batch:
        if not isinstance(u, _UPDATE_TYPES):
            what = type(u).__name__ if u is not None else "null"
            raise RecordingError(f"a {what} where an update belongs")
    return batch


def _open_file(folder: str, name: str) -> typing.BinaryIO:
    """`folder/name` opened for reading, refused (before it is opened, so a FIFO or a device
    cannot block the reader or be read from) unless it is a regular file."""
    path = os.path.join(folder, name)
    try:
        kind = os.stat(path).st_mode
        if stat.S_ISREG(kind):
            # O_NONBLOCK: should the file be swapped for a FIFO after the check, the open does
            # not wait for a writer (the check after it refuses it).
            fd = os.open(path, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0))
            kind = os.fstat(fd).st_mode
            if stat.S_ISREG(kind):
                return os.fdopen(fd, "rb")
            os.close(fd)
    except FileNotFoundError:
        raise
    except OSError as exc:
        raise not_a_recording(folder, f"{name} cannot be read: {exc.strerror}", file=path) from None
    raise not_a_recording(folder, f"{name} is {_kind_of(kind)}, not a file", file=path)


def _kind_of(mode: int) -> str:
    if stat.S_ISDIR(mode):
        return "a folder"
    if stat.S_ISFIFO(mode):
        return "a FIFO (named pipe)"
    if stat.S_ISCHR(mode) or stat.S_ISBLK(mode):
        return "a device"
    if stat.S_ISSOCK(mode):
        return "a socket"
    return "not a regular file"
