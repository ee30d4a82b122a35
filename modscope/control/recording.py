"""Recordings: the controller's update stream written to a folder as it goes, and read back.

A recording is a folder holding `meta.json` (what was run: the script, its hash, the versions)
and `updates.jsonl`, one line per command: `{"updates": [...]}`, each update encoded by
`encode` (recording_codec.py: plain JSON, dataclasses tagged with their class, enums with their
type, non-finite floats and complex numbers spelled out, so the file is strict JSON). A line is
appended and flushed as soon as its command is done, so a run killed at any moment leaves a
recording that reads back up to its last complete command; a torn last line is dropped.
Anything else a writer does not write is refused with the file and line (`RecordingError`),
and only regular files are opened. Torch-free: a replay paints a recording without importing
torch.

Format version 1 (`FORMAT_VERSION`); a reader refuses a newer version with a clear error.
docs/recording.md describes the format.
"""

from __future__ import annotations

import contextlib
import json
import os
import platform
import re
import stat
import time
import typing
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from modscope.control import updates as up
from modscope.control.recording_codec import RecordingError, decode, encode, shown
from modscope.core.contract.fmt import format_bytes
from modscope.core.contract.version import VERSION
from modscope.core.script.outputs import OutputError, atomic_write

FORMAT = "modscope-recording"
FORMAT_VERSION = 1
META_FILE = "meta.json"
UPDATES_FILE = "updates.jsonl"
MAX_LINE_BYTES = 1 << 30
"""The longest line of `updates.jsonl` a reader takes (a step of a model with 100,000 tensors
is about 200 MiB); a longer one is an error, not an unbounded read."""
MAX_META_BYTES = 1 << 20
RANK_FOLDER = re.compile(r"rank(0|[1-9][0-9]*)")


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
        text = json.dumps(dict(meta), indent=1, allow_nan=False).encode("utf-8")

        def write_meta(file: typing.BinaryIO) -> None:
            file.write(text)

        try:
            atomic_write(os.path.join(folder, META_FILE), write_meta, size=len(text))
        except OutputError as exc:
            # The writer's callers word its OSError themselves (`record.recording_error`), as
            # for the lines of the updates file.
            cause = exc.__cause__ or exc.__context__
            if isinstance(cause, OSError):
                raise cause from None
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
            raise not_a_recording(folder, f"{META_FILE}: {key!r} is {shown(meta[key])}", file=path)
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
