"""Writing files modscope produces (`--save-state`): checked before the work, written atomically."""

from __future__ import annotations

import contextlib
import os
import stat
import tempfile
from collections.abc import Callable
from typing import BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


class OutputError(Exception):
    """A file modscope was asked to write cannot be written; the message says why, for a person."""


def file_kind(mode: int) -> str:
    """What a `stat` mode is, in words: `a regular file`, `a directory`, `a character device`."""
    return next((words for test, words in _KINDS if test(mode)), "a regular file")


def _target(path: str) -> str:
    # A symlink stays a symlink: its target is what gets replaced, as `open(path, "w")` would.
    return os.path.realpath(path) if os.path.islink(path) else os.path.abspath(path)


def check_writable(path: str) -> None:
    """Raise `OutputError` unless `atomic_write(path, ...)` can succeed as far as can be known
    now: a non-empty path, not a directory or device, in an existing folder that accepts a new
    file (tried for real: permission bits do not bind root, read-only mounts show only on write).
    """
    if not path:
        raise OutputError("the path is empty")
    target = _target(path)
    try:
        mode = os.stat(target).st_mode
    except FileNotFoundError:
        mode = None
    except OSError as exc:
        raise OutputError(f"{path}: {exc.strerror or exc}") from None
    if mode is not None:
        if not stat.S_ISREG(mode):
            raise OutputError(f"{path} is {file_kind(mode)}, not a file modscope can write")
        if not os.access(target, os.W_OK):
            raise OutputError(f"{path} exists and is read-only")
    folder = os.path.dirname(target)
    if not os.path.exists(folder):
        raise OutputError(f"the folder {os.path.dirname(path) or '.'} does not exist")
    if not os.path.isdir(folder):
        raise OutputError(f"{os.path.dirname(path)} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".modscope-", suffix=".tmp", dir=folder)
    except OSError as exc:
        where = os.path.dirname(path) or "."
        raise OutputError(f"cannot create a file in {where}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _new_file_mode(target: str) -> int:
    """The mode the file ends with: an existing file's own, else what `open(path, "w")` gives."""
    try:
        return stat.S_IMODE(os.stat(target).st_mode)
    except FileNotFoundError:
        return 0o666 & ~_umask()


def _umask() -> int:
    try:  # Linux says it without changing it (no window where another thread sees another)
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("Umask:"):
                    return int(line.split()[1], 8)
    except (OSError, ValueError, IndexError):
        pass
    umask = os.umask(0o022)  # elsewhere, reading the umask means setting it: put it back
    os.umask(umask)
    return umask


def atomic_write(path: str, write_fn: Callable[[BinaryIO], None]) -> None:
    """Write `path` through `write_fn(file)`: into a temporary file in the same folder, then
    `os.replace`, so a reader never sees half a file and a failure leaves the old file as it was.

    The file keeps an existing file's mode (a new one gets the umask's); no temporary file is
    left behind, whatever `write_fn` raises. An `OSError` becomes an `OutputError`.
    """
    target = _target(path)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder
        )
    except OSError as exc:
        raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _new_file_mode(target))
            write_fn(f)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(exc, OSError):
            raise OutputError(f"cannot write {path}: {exc.strerror or exc}") from exc
        raise
