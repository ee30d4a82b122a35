"""Writing files modscope produces (`--save-state`, `--record`): checked before the work, never
onto an input, written atomically, one writer at a time, a full disk said in plain words."""

from __future__ import annotations

import contextlib
import errno
import fcntl
import os
import stat
import sys
import tempfile
from collections.abc import Callable
from typing import Any, BinaryIO

_KINDS = (
    (stat.S_ISDIR, "a directory"),
    (stat.S_ISCHR, "a character device"),
    (stat.S_ISBLK, "a block device"),
    (stat.S_ISFIFO, "a named pipe"),
    (stat.S_ISSOCK, "a socket"),
)


LOCK_FILE = ".modscope.lock"
"""The file inside a folder being written that `FolderLock` locks (it holds the writer's pid)."""


class OutputError(Exception):
    """A file modscope was asked to write cannot be written; the message says why, for a person."""


class FolderBusy(OutputError):
    """Another process holds the folder's `FolderLock`."""

    def __init__(self, message: str, pid: int | None) -> None:
        super().__init__(message)
        self.pid = pid


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


class _Watched:
    """A file whose `write` keeps the `OSError` it raised: torch's zip writer turns it into
    "[enforce fail at inline_container.cc] unexpected pos", which says nothing of the disk."""

    def __init__(self, file: BinaryIO) -> None:
        self._file = file
        self.error: OSError | None = None

    def write(self, data: Any) -> int:
        try:
            return self._file.write(data)
        except OSError as exc:
            self.error = exc
            raise

    def __getattr__(self, name: str) -> Any:
        return getattr(self._file, name)


def atomic_write(
    path: str, write_fn: Callable[[BinaryIO], None], *, size: int | None = None
) -> None:
    """Write `path` through `write_fn(file)`: into a temporary file in the same folder, then
    `os.replace`, so a reader never sees half a file and a failure leaves the old file as it was.

    The file keeps an existing file's mode (a new one gets the umask's); no temporary file is
    left behind, whatever `write_fn` raises. An `OSError` becomes an `OutputError`, also one
    that `write_fn` turned into another exception; a full disk is said as such, with `size`
    (bytes the file needs, when known).
    """
    target = _target(path)
    folder = os.path.dirname(target)
    try:
        fd, tmp = tempfile.mkstemp(
            prefix=f".{os.path.basename(target)}.", suffix=".tmp", dir=folder
        )
    except OSError as exc:
        raise _write_error(path, exc, size) from None
    watched: _Watched | None = None
    try:
        with os.fdopen(fd, "wb") as f:
            os.fchmod(f.fileno(), _new_file_mode(target))
            watched = _Watched(f)
            write_fn(watched)  # type: ignore[arg-type]
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, target)
    except BaseException as exc:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        cause = exc if isinstance(exc, OSError) else watched.error if watched else None
        if cause is not None:
            raise _write_error(path, cause, size) from exc
        raise


def is_disk_full(exc: OSError) -> bool:
    """True for the errors a full disk (or a spent quota) gives."""
    return exc.errno in (errno.ENOSPC, errno.EDQUOT)


def _write_error(path: str, exc: OSError, size: int | None) -> OutputError:
    if is_disk_full(exc):
        return OutputError(disk_full_message(path, size))
    return OutputError(f"cannot write {path}: {exc.strerror or exc}")


def disk_full_message(path: str, size: int | None = None) -> str:
    """`the disk is full: cannot write PATH (it needs about 1.2 MB; 300 kB are free there)`."""
    known = []
    if size is not None:
        known.append(f"it needs about {_bytes(size)}")
    free = _free_bytes(os.path.dirname(os.path.abspath(path)))
    if free is not None:
        known.append(f"{_bytes(free)} free there")
    more = f" ({'; '.join(known)})" if known else ""
    return f"the disk is full: cannot write {path}{more}; free some space or write elsewhere"


def _free_bytes(folder: str) -> int | None:
    try:
        found = os.statvfs(folder)
    except OSError:
        return None
    return found.f_bavail * found.f_frsize


def _bytes(n: int) -> str:
    for unit, scale in (("GB", 10**9), ("MB", 10**6), ("kB", 10**3)):
        if n >= scale:
            return f"{n / scale:.1f} {unit}"
    return f"{n} bytes"


# -- outputs that would replace an input ----------------------------------------------------


def same_file(a: str, b: str) -> bool:
    """True when `a` and `b` name one file or folder: one path once symlinks are followed, or
    one file under two names (a hard link)."""
    if os.path.realpath(a) == os.path.realpath(b):
        return True
    try:
        return os.path.samefile(a, b)
    except OSError:
        return False


def is_within(path: str, folder: str) -> bool:
    """True when `path` is `folder` or lies anywhere below it (symlinks followed)."""
    path, folder = os.path.realpath(path), os.path.realpath(folder)
    return path == folder or path.startswith(folder.rstrip(os.sep) + os.sep)


def loaded_module_of(path: str) -> str | None:
    """The name of a module loaded in this process whose source file `path` is, if any."""
    try:
        wanted = os.stat(path)
    except OSError:
        return None  # a file that is not there is no module's source now
    for name, module in list(sys.modules.items()):
        file = getattr(module, "__file__", None)
        if not isinstance(file, str):
            continue
        try:
            found = os.stat(file)
        except OSError:
            continue
        if (found.st_dev, found.st_ino) == (wanted.st_dev, wanted.st_ino):
            return name
    return None


# -- one writer per folder ------------------------------------------------------------------


class FolderLock:
    """An exclusive `flock` on `LOCK_FILE` inside a folder, held while one process writes
    there; the file holds that process's pid, for the message another one shows. The kernel
    drops the lock when the process ends, however it ends, so a stale file locks nothing."""

    def __init__(self, fd: int, folder: str) -> None:
        self._fd: int | None = fd
        self.folder = folder

    @classmethod
    def acquire(cls, folder: str) -> FolderLock:
        """Lock `folder` (which must exist) or raise `FolderBusy` naming the holder's pid
        (`OutputError` when the lock file cannot be made)."""
        path = os.path.join(folder, LOCK_FILE)
        try:
            fd = os.open(path, os.O_RDWR | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW, 0o644)
        except OSError as exc:
            raise OutputError(f"cannot lock {folder}: {exc.strerror or exc}") from None
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            pid = _pid_in(fd)
            os.close(fd)
            raise FolderBusy(busy_message(folder, pid), pid) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, f"{os.getpid()}\n".encode(), 0)
        return cls(fd, folder)

    def release(self) -> None:
        if self._fd is not None:
            os.close(self._fd)  # closing drops the flock
            self._fd = None

    def __enter__(self) -> FolderLock:
        return self

    def __exit__(self, *exc: object) -> None:
        self.release()


def lock_holder(folder: str) -> int | None:
    """The pid of the process that holds `folder`'s `FolderLock` (0 when it cannot be read),
    None when none does. Looks without creating anything."""
    path = os.path.join(folder, LOCK_FILE)
    try:
        fd = os.open(path, os.O_RDONLY | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK)
    except OSError:
        return None
    try:
        if not stat.S_ISREG(os.fstat(fd).st_mode):
            return None
        try:
            fcntl.flock(fd, fcntl.LOCK_SH | fcntl.LOCK_NB)
        except OSError:
            return _pid_in(fd) or 0
        return None  # closing drops the shared lock taken to look
    finally:
        os.close(fd)


def busy_message(folder: str, pid: int | None) -> str:
    who = f"pid {pid}" if pid else "its pid unknown"
    return (
        f"another modscope run ({who}) is recording into {folder}; wait for it to end, or "
        "record to another folder"
    )


def _pid_in(fd: int) -> int | None:
    try:
        text = os.pread(fd, 32, 0).decode("ascii", "replace").strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None
