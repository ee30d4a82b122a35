"""`run --record DIR`: the headless run's iterations go through the session controller, whose
update stream (the one the app paints) is appended to a recording as each step completes.

`RecordedRun.step()` gives the run's report what `Session.run_iteration()` and the doctor's
`StepWatcher` give it without a recording, so the output is the same either way. Under torchrun
each rank records its own run (`DIR/rank0`, `DIR/rank1`, ...: the caller passes the rank's
folder), and the ranks' comparison (`RankWatcher`) adds its findings to the stream.
"""

from __future__ import annotations

import os
from collections.abc import Callable
from dataclasses import dataclass

import torch

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController
from modscope.control.recording import META_FILE, RecordingWriter, script_meta
from modscope.core.distributed import RankWatcher
from modscope.core.layer_types import LayerStep
from modscope.core.outputs import OutputError, check_writable
from modscope.core.process_rank import launched_rank
from modscope.core.session import Session
from modscope.core.types import BreakEvent, Finding, HookEvent, StepRecord, UserError

TENSORS_FOLDER = "tensors"


def check_recording_folder(folder: str) -> None:
    """Refuse, before the run, a `--record` folder that cannot be written (`OutputError`)."""
    if not folder:
        raise OutputError("an empty path")
    if os.path.exists(folder) and not os.path.isdir(folder):
        raise OutputError("exists and is not a folder")
    try:
        os.makedirs(folder, exist_ok=True)
    except OSError as exc:
        raise OutputError(exc.strerror or str(exc)) from None
    check_writable(os.path.join(folder, META_FILE))


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
        tee: PrintTee,
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
        self.writer = RecordingWriter(folder, meta)
        self.controller = SessionController(lambda sink, pause: session, script=session.script.path)
        self.ranks = RankWatcher(session.model, session.runner)
        self._doctor_findings: tuple[Finding, ...] = ()
        self._rank_findings: tuple[Finding, ...] = ()
        first = self.controller.load()
        first = self._with_rank_findings(first, self.ranks.initial())
        tee.also = self.controller.printed
        early = [up.Printed(line) for line in tee.early]
        self.writer.write(early + first)
        self.initial = self._new_findings(first)
        if layers:  # recorded too: a replay's layers view shows them
            self.writer.write(self.controller.handle(cmd.WatchLayers()))

    def step(self) -> Iteration:
        updates = self.controller.handle(cmd.Step())
        done = next(u for u in updates if isinstance(u, up.PhaseDone))
        if done.record is not None:
            updates = self._with_rank_findings(updates, self.ranks.after_step(done.record.step))
        events = tuple(e for u in updates if isinstance(u, up.HookEventsSeen) for e in u.events)
        self.writer.write(updates)
        if done.record is not None and self.tensors_limit is not None:
            self._save_tensors(done.record.step)
        layers = next((u.step for u in updates if isinstance(u, up.LayersSeen)), None)
        return Iteration(events, done.record, done.error, self._new_findings(updates), layers)

    def record_break(self, event: BreakEvent) -> None:
        """The break that stopped the run, as the recording's last line."""
        self.writer.write([up.BreakHit(event)])

    def close(self) -> None:
        self.writer.close()

    def _with_rank_findings(
        self, updates: list[up.Update], found: list[Finding]
    ) -> list[up.Update]:
        """`updates` with the ranks' findings in every list of findings, and `found` (new this
        command) announced before the status. The controller's doctor does not know them: its
        `FindingsChanged` would drop them from a replay's findings pane."""
        out: list[up.Update] = []
        for u in updates:
            if isinstance(u, up.FindingsChanged):
                self._doctor_findings = u.findings
                u = up.FindingsChanged(u.findings + self._rank_findings, u.new)
            out.append(u)
        if found:
            self._rank_findings += tuple(found)
            changed = up.FindingsChanged(self._doctor_findings + self._rank_findings, tuple(found))
            last = len(out) - (1 if out and isinstance(out[-1], up.StatusChanged) else 0)
            out.insert(last, changed)
        return out

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
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, f"step-{step}.pt")
        torch.save(tensors, path + ".tmp")
        os.replace(path + ".tmp", path)
