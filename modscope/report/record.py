"""`run --record DIR`: the headless run's iterations go through the session controller, whose
update stream (the one the app paints) is appended to a recording as each step completes.

`RecordedRun.step()` gives the run's report what `PlainRun.step()` gives it without a recording
(both look on through `core.onlookers`), so the output is the same either way. Under torchrun each
rank records its own run (`DIR/rank0`, `DIR/rank1`, ...: the caller passes the rank's folder),
the ranks' comparison among its findings.
"""

from __future__ import annotations

import contextlib
import os
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

import torch

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController
from modscope.control.recording import (
    META_FILE,
    UPDATES_FILE,
    RecordingError,
    RecordingWriter,
    read_meta,
    script_meta,
)
from modscope.core.contract.findings import Finding
from modscope.core.contract.fmt import printable
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import (
    BreakEvent,
    HookEvent,
    PhaseResult,
    StepRecord,
    UserError,
)
from modscope.core.process_rank import launched_rank
from modscope.core.script.outputs import (
    LOCK_FILE,
    FolderBusy,
    FolderLock,
    OutputError,
    atomic_write,
    busy_message,
    check_writable,
    disk_full_message,
    is_disk_full,
    lock_holder,
    same_file,
)
from modscope.core.session import Session

TENSORS_FOLDER = "tensors"


def recording_files(folder: str) -> tuple[str, ...]:
    """The folder a recording is written to and the files it writes there (its saved tensors
    go below `folder/tensors`)."""
    return (folder, *(os.path.join(folder, name) for name in (META_FILE, UPDATES_FILE, LOCK_FILE)))


def check_recording_folder(folder: str, script: str, *, overwrite: bool = False) -> None:
    """Refuse, before the script runs, a `--record` folder that cannot be written, that another
    run is recording into, or that holds anything but a recording of `script` (that one only
    with `overwrite`): `OutputError` saying why. Creates nothing."""
    if not folder:
        raise OutputError("an empty path")
    if os.path.lexists(folder) and not os.path.isdir(folder):
        raise OutputError("exists and is not a folder")
    if not os.path.isdir(folder):
        _check_can_create(folder)
        return
    pid = lock_holder(folder)
    if pid is not None:
        raise FolderBusy(busy_message(folder, pid), pid)
    _check_contents(folder, script, overwrite=overwrite)
    check_writable(os.path.join(folder, META_FILE))


def open_recording_folder(folder: str, script: str, *, overwrite: bool = False) -> FolderLock:
    """The `--record` folder made and locked for this run (`FolderLock`, held until the run
    ends), its contents checked again under the lock (a run may have filled it since
    `check_recording_folder`), and with `overwrite` the previous recording removed."""
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from None
    lock = FolderLock.acquire(folder)
    try:
        _check_contents(folder, script, overwrite=overwrite)
        if overwrite:
            _remove_recording(folder)
    except OSError as exc:
        lock.release()
        raise OutputError(f"cannot replace the recording: {exc.strerror or exc}") from None
    except BaseException:
        lock.release()
        raise
    return lock


def _check_can_create(folder: str) -> None:
    """A folder that does not exist yet can be made: its nearest existing parent is a folder
    that accepts new entries (tried for real, and put back)."""
    parent = os.path.dirname(os.path.abspath(folder))
    while not os.path.lexists(parent):
        parent = os.path.dirname(parent)
    if not os.path.isdir(parent):
        raise OutputError(f"{parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".modscope-", suffix=".tmp", dir=parent)
    except OSError as exc:
        raise OutputError(f"cannot create a folder in {parent}: {exc.strerror or exc}") from None
    os.close(fd)
    os.unlink(probe)


def _check_contents(folder: str, script: str, *, overwrite: bool) -> None:
    try:
        entries = sorted(name for name in os.listdir(folder) if name != LOCK_FILE)
    except OSError as exc:
        raise OutputError(f"cannot be listed: {exc.strerror or exc}") from None
    if not entries:
        return
    meta_path = os.path.join(folder, META_FILE)
    shown = ", ".join(printable(e) for e in entries[:5]) + (", ..." if len(entries) > 5 else "")
    not_ours = OutputError(
        f"holds files that are not a modscope recording ({shown}); record to a new or empty folder"
    )
    if not os.path.isfile(meta_path):  # a FIFO or device named meta.json is not read
        raise not_ours
    try:
        meta = read_meta(folder)
    except RecordingError:
        raise not_ours from None
    recorded = meta.get("script")
    if not isinstance(recorded, str) or not same_file(recorded, script):
        raise OutputError(
            f"holds a recording of another script ({printable(str(recorded))}); record to a "
            "new or empty folder"
        )
    if not overwrite:
        raise OutputError(
            f"already holds a recording of this script (made {printable(str(meta.get('created')))}"
            "); add --overwrite to replace it, or record to a new folder"
        )


def _remove_recording(folder: str) -> None:
    """The files of the recording being replaced: its updates and saved tensors (`meta.json` is
    replaced when the new one is written, so the folder stays a recording of this script)."""
    tensors = os.path.join(folder, TENSORS_FOLDER)
    if os.path.isdir(tensors) and not os.path.islink(tensors):
        for name in os.listdir(tensors):
            if name.startswith("step-") and name.endswith(".pt"):
                os.unlink(os.path.join(tensors, name))
        with contextlib.suppress(OSError):
            os.rmdir(tensors)  # only when nothing else was kept there
    with contextlib.suppress(FileNotFoundError):
        os.unlink(os.path.join(folder, UPDATES_FILE))


def recording_error(folder: str, exc: OSError) -> OutputError:
    """A recording that could not be written on, in words: what it still holds is readable."""
    path = os.path.join(folder, UPDATES_FILE)
    if is_disk_full(exc):
        said = disk_full_message(path)
    else:
        said = f"cannot write {path}: {exc.strerror or exc}"
    return OutputError(f"{said}; the recording holds every step before this one (modscope replay)")


@dataclass(frozen=True)
class Iteration:
    """What one recorded iteration gave the report."""

    events: tuple[HookEvent, ...]
    record: StepRecord | None
    error: UserError | None
    findings: tuple[Finding, ...]
    layers: LayerStep | None = None
    """Each module's statistics (`run --layers`), None without them."""


class PrintTee:
    """The script's print sink for a recorded run: each line to the run's own sink, and to the
    recording once it is open (lines printed before, while the script loaded, are kept)."""

    def __init__(self, sink: Callable[[str], None]) -> None:
        self.sink = sink
        self.early: list[str] = []
        self.also: Callable[[str], None] | None = None

    def __call__(self, line: str) -> None:
        self.sink(line)
        if self.also is None:
            self.early.append(line)
        else:
            self.also(line)


class RecordedRun:
    """Drives `session` through a controller and writes the controller's updates to `folder`.

    `tensors_limit`: parameters of at most this many elements are also saved whole after
    each step (`tensors/step-N.pt`, read back with `torch.load(..., weights_only=True)`).
    """

    def __init__(
        self,
        session: Session,
        folder: str,
        tee: PrintTee | None,
        *,
        tensors_limit: int | None = None,
        layers: bool = False,
    ) -> None:
        self.session = session
        self.folder = folder
        self.tensors_limit = tensors_limit
        versions = {"torch": torch.__version__}
        place = launched_rank()
        meta = script_meta(
            session.script.path,
            versions=versions,
            rank=place.rank if place else None,
            world_size=place.world_size if place else None,
        )
        try:
            self.writer = RecordingWriter(folder, meta)
        except OSError as exc:
            raise recording_error(folder, exc) from exc
        self.controller = SessionController(lambda sink, pause: session, script=session.script.path)
        first = self.controller.load()
        early = []
        if tee is not None:  # None: the user's own loop prints as it always does
            tee.also = self.controller.printed
            early = [up.Printed(line) for line in tee.early]
        self._write(early + first)
        self.initial = self._new_findings(first)
        if layers:  # recorded too: a replay's layers view shows them
            self._write(self.controller.handle(cmd.CollectLayers()))

    def step(self) -> Iteration:
        """Run one iteration through the controller, recorded."""
        return self._recorded(self.controller.handle(cmd.Step()))

    def observed(self, result: PhaseResult) -> Iteration:
        """An iteration the user's own loop ran (`modscope.watch()`), recorded."""
        return self._recorded(self.controller.observed(result))

    def _recorded(self, updates: list[up.Update]) -> Iteration:
        done = next(u for u in updates if isinstance(u, up.PhaseDone))
        events = tuple(e for u in updates if isinstance(u, up.HookEventsSeen) for e in u.events)
        self._write(updates)
        if done.record is not None and self.tensors_limit is not None:
            self._save_tensors(done.record.step)
        layers = next((u.step for u in updates if isinstance(u, up.LayersSeen)), None)
        return Iteration(events, done.record, done.error, self._new_findings(updates), layers)

    def record_break(self, event: BreakEvent) -> None:
        """The break that stopped the run, as the recording's last line."""
        self._write([up.BreakHit(event)])

    def close(self) -> None:
        """Close the recording, and the controller's onlookers (their hooks off the model)."""
        try:
            self.controller.close()
        finally:
            self.writer.close()

    def _write(self, updates: list[up.Update]) -> None:
        """One command's line; a write that fails (a full disk) is an `OutputError` for a person,
        and the recording keeps every line before it."""
        try:
            self.writer.write(updates)
        except OSError as exc:
            raise recording_error(self.folder, exc) from exc

    @staticmethod
    def _new_findings(updates: list[up.Update]) -> tuple[Finding, ...]:
        return tuple(f for u in updates if isinstance(u, up.FindingsChanged) for f in u.new)

    def _save_tensors(self, step: int) -> None:
        limit = self.tensors_limit or 0
        tensors = {
            name: p.detach().cpu().clone()
            for name, p in self.session.model.named_parameters()
            if p.numel() <= limit
        }
        folder = os.path.join(self.folder, TENSORS_FOLDER)
        try:
            os.makedirs(folder, exist_ok=True)
        except OSError as exc:
            raise recording_error(folder, exc) from exc
        size = sum(t.nelement() * t.element_size() for t in tensors.values())
        path = os.path.join(folder, f"step-{step}.pt")
        atomic_write(path, lambda f: torch.save(tensors, f), size=size)
