"""Recordings: the controller's update stream written to a folder as it goes, and read back.

A recording is a folder holding `meta.json` (what was run: the script, its hash, the versions)
and `updates.jsonl`, one line per command: `{"updates": [...]}`, each update encoded by
`encode` (plain JSON: dataclasses tagged with their class, enums with their type, non-finite
floats and complex numbers spelled out, so the file is strict JSON). A line is appended and
flushed as soon as its command is done, so a run killed at any moment leaves a recording that
reads back up to its last complete command; a torn last line is dropped. Torch-free: a replay
paints a recording without importing torch.

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
import time
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modscope.control import updates as up
from modscope.core import hook_spec, layer_types, timelines, types
from modscope.core.version import VERSION

FORMAT = "modscope-recording"
FORMAT_VERSION = 1
META_FILE = "meta.json"
UPDATES_FILE = "updates.jsonl"


class RecordingError(Exception):
    """A folder that is not a recording this modscope can read; the message says why."""


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


def decode(data: Any) -> Any:
    """The inverse of `encode`: arrays come back as tuples, mappings as dicts."""
    if data is None or isinstance(data, bool | int | float | str):
        return data
    if isinstance(data, list):
        return tuple(decode(v) for v in data)
    if "$t" in data:
        cls = _TYPES.get(data["$t"])
        if cls is None or not dataclasses.is_dataclass(cls):
            raise RecordingError(f"unknown record type {data['$t']!r}")
        names = {f.name for f in dataclasses.fields(cls)}
        # Fields a later version of the same format added are left out, not an error.
        return cls(**{k: decode(v) for k, v in data.items() if k in names})
    if "$e" in data:
        cls = _TYPES.get(data["$e"])
        if cls is None or not issubclass(cls, enum.Enum):
            raise RecordingError(f"unknown enum {data['$e']!r}")
        return cls(data["v"])
    if "$f" in data:
        return float(data["$f"])
    if "$c" in data:
        re, im = data["$c"]
        return complex(decode(re), decode(im))
    if "$m" in data:
        return {k: decode(v) for k, v in data["$m"].items()}
    if "$p" in data:
        return {decode(k): decode(v) for k, v in data["$p"]}
    raise RecordingError(f"cannot read {sorted(data)!r}")


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

    `torn` is True when the last line was cut short (the run was killed while writing it)."""

    folder: str
    meta: Mapping[str, Any]
    batches: tuple[tuple[up.Update, ...], ...]
    torn: bool = False

    def updates(self) -> Iterator[up.Update]:
        for batch in self.batches:
            yield from batch


def read_meta(folder: str) -> dict[str, Any]:
    """The recording's meta data; `RecordingError` when `folder` is no recording this modscope
    reads (missing, not a recording, or written by a newer format)."""
    path = os.path.join(folder, META_FILE)
    if not os.path.isdir(folder):
        raise RecordingError(f"{folder}: no such folder")
    try:
        with open(path, encoding="utf-8") as f:
            meta = json.load(f)
    except FileNotFoundError:
        raise RecordingError(f"{folder} is not a modscope recording (no {META_FILE})") from None
    except (OSError, ValueError) as exc:
        raise RecordingError(f"{path} cannot be read: {exc}") from None
    if not isinstance(meta, dict) or meta.get("format") != FORMAT:
        raise RecordingError(f"{path} is not a modscope recording's meta data")
    version = meta.get("version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        raise RecordingError(
            f"{folder} was written in recording format {version}; this modscope reads format "
            f"{FORMAT_VERSION} and older: upgrade modscope to replay it"
        )
    return meta


def read_ranks(folder: str) -> list[Recording]:
    """Every rank's recording under `folder`: the folder itself, or its `rank0`, `rank1`, ...
    (a run under torchrun), in rank order."""
    if os.path.isdir(folder) and not os.path.exists(os.path.join(folder, META_FILE)):
        ranks = sorted(
            (int(name[4:]), name)
            for name in os.listdir(folder)
            if name.startswith("rank") and name[4:].isdigit()
        )
        if ranks:
            return [read_recording(os.path.join(folder, name)) for _, name in ranks]
    return [read_recording(folder)]


def read_recording(folder: str) -> Recording:
    """Read a recording; a torn last line (a run killed mid-write) is dropped."""
    meta = read_meta(folder)
    batches: list[tuple[up.Update, ...]] = []
    torn = False
    try:
        with open(os.path.join(folder, UPDATES_FILE), encoding="utf-8") as f:
            lines = f.read().split("\n")
    except FileNotFoundError:
        lines = []
    for i, line in enumerate(lines):
        if not line:
            continue
        try:
            data = json.loads(line)
        except ValueError:
            if i == len(lines) - 1:  # the last line, cut short: the run ended while writing
                torn = True
                break
            raise RecordingError(f"{folder}/{UPDATES_FILE}, line {i + 1}: not JSON") from None
        batches.append(tuple(decode(u) for u in data["updates"]))
    return Recording(folder, meta, tuple(batches), torn)
