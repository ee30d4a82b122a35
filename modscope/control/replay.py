"""The replay controller: answers the app's commands from a recording instead of a live model.

It opens at the last recorded step. `Step`/`NextPhase` move on one recorded step, `Rewind` back
one, `GoToStep` to any; each move that goes back repaints the session from its start (a
`Repaint` update, then the recorded updates up to that step). A run that stopped at a break
(`run --break`) is shown stopped there at its last step, as the live app showed it: the break
again, and the status paused at it. A recording of several ranks (`run --record DIR` under
torchrun) switches ranks with `SwitchRank`, at the same step. Commands that need a live model
(hooks, train/eval, reload, values) get a notice instead. Torch-free, like the recording.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Sequence
from dataclasses import replace

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.recording import Recording, RecordingError
from modscope.core.contract.steps import BreakEvent, Phase, UserError

LIVE_ONLY = "a replay has no live model"


class ReplayController:
    """A recording under the app's commands (the `Controller` the thread shell runs)."""

    def __init__(
        self,
        recordings: Recording | Sequence[Recording],
        *,
        emit: Callable[[Sequence[up.Update]], None] | None = None,
        wait: Callable[[], cmd.Command] | None = None,
    ) -> None:
        self.ranks = [recordings] if isinstance(recordings, Recording) else list(recordings)
        # A torchrun job's ranks by number (a rank whose folder is missing is skipped).
        self._numbers = [i if r.rank is None else r.rank for i, r in enumerate(self.ranks)]
        sizes = [r.meta.get("world_size") for r in self.ranks]
        self._world = max([len(self.ranks), self._numbers[-1] + 1, *(s for s in sizes if s)])
        self._rank = 0
        self._use(0)
        self._at = len(self._ends)  # how many recorded steps are shown

    def _use(self, rank: int) -> None:
        self._rank = rank
        self.recording = self.ranks[rank]
        # The batch that completes each recorded step, in order.
        self._ends = [
            i
            for i, batch in enumerate(self.recording.batches)
            if any(isinstance(u, up.PhaseDone) and u.record is not None for u in batch)
        ]
        self._break, self._tail = self._break_of(self.recording.batches)
        self._last_status: up.SessionStatus | None = None

    def _break_of(self, batches: Sequence[Sequence[up.Update]]) -> tuple[BreakEvent | None, int]:
        """The break the recorded run stopped at (after its last step), and where the batches
        after the last step begin that are not shown as steps: the abandoned iteration and
        the break (the number of batches when the run did not stop at a break)."""
        last = self._ends[-1] if self._ends else -1
        for i in range(len(batches) - 1, last, -1):
            hit = next((u for u in batches[i] if isinstance(u, up.BreakHit)), None)
            if hit is not None:
                before = batches[i - 1] if i - 1 > last else ()
                abandoned = any(isinstance(u, up.PhaseDone) and u.abandoned for u in before)
                return hit.event, i - 1 if abandoned else i
        return None, len(batches)

    @property
    def session(self) -> Recording:
        return self.recording

    @property
    def steps(self) -> int:
        """How many iterations the recording holds."""
        return len(self._ends)

    def load(self) -> list[up.Update]:
        shown = self._paint(self.steps)
        missing = sorted(set(range(self._numbers[-1] + 1)) - set(self._numbers))
        if missing:
            listed = ", ".join(f"rank{r}" for r in missing)
            where = os.path.dirname(self.ranks[0].folder)
            shown.insert(-1, up.Notice(f"{where} has no {listed}: not shown", "warning"))
        return shown

    def close(self) -> list[up.Update]:
        return []

    def handle(self, command: cmd.Command) -> list[up.Update]:
        if isinstance(command, cmd.Step | cmd.NextPhase):
            if self._at >= self.steps:
                return [up.Notice(self._end_words()), self._status()]
            first = self._ends[self._at - 1] + 1 if self._at else self._load_end() + 1
            self._at += 1
            return [*self._updates(first, self._ends[self._at - 1] + 1), *self._shown_break()]
        if isinstance(command, cmd.Rewind):
            if self._at == 0:
                return [up.Notice("the recording starts here"), self._status()]
            return self._paint(self._at - 1)
        if isinstance(command, cmd.GoToStep):
            return self._paint(max(0, min(command.step, self.steps)))
        if isinstance(command, cmd.SwitchRank):
            if len(self.ranks) == 1:
                return [up.Notice("this recording has one rank"), self._status()]
            step = self._at
            self._use((self._rank + command.by) % len(self.ranks))
            return self._paint(min(step, self.steps))
        if isinstance(command, cmd.ListHooks):
            return [self._hooks_of(command.path)]
        if isinstance(command, cmd.ReadValues):
            return [
                up.ValuesRead(command.path, command.grad, command.offset, (), 0, (), "not recorded")
            ]
        if isinstance(command, cmd.ToggleTraining | cmd.AttachHook | cmd.DetachHook | cmd.Reload):
            return [up.Notice(f"{LIVE_ONLY}: replay shows what was recorded", "warning")]
        return []

    # -- painting ------------------------------------------------------------------------------

    def _load_end(self) -> int:
        """The last batch before the first step (the load and what came with it)."""
        return self._ends[0] - 1 if self._ends else self._tail - 1

    def _paint(self, step: int) -> list[up.Update]:
        """The session from its start to `step`, as if it had just run (`Repaint` first)."""
        self._at = step
        end = self._ends[step - 1] + 1 if step else self._load_end() + 1
        return [up.Repaint(step), *self._updates(0, end), *self._shown_break()]

    def _shown_break(self) -> list[up.Update]:
        """The status, after the break when the replay stands where the run stopped at one."""
        shown = self._break if self._at == self.steps else None
        return [*([up.BreakHit(shown)] if shown is not None else []), self._status()]

    def _end_words(self) -> str:
        if self._break is None:
            return f"the recording ends at step {self.steps}"
        where = f"step {self._break.step}, {self._break.phase.value} phase"
        return f"the recorded run stopped at this break ({where}): the recording ends here"

    def _updates(self, start: int, end: int) -> list[up.Update]:
        out: list[up.Update] = []
        for batch in self.recording.batches[start:end]:
            for u in batch:
                if isinstance(u, up.StatusChanged):
                    self._last_status = u.status
                else:
                    out.append(u)
        return out

    def _status(self) -> up.StatusChanged:
        status = self._last_status or up.SessionStatus(self.recording.meta.get("script", ""))
        # A step's recorded status says where the live run stood then; the replay's position
        # is the step shown, paused where the run stopped at a break.
        paused_at = None
        if self._break is not None and self._at == self.steps:
            e = self._break
            where = e.module if e.module is not None else e.phase.value
            paused_at = f"break {e.condition} at {where or '(root)'}"
        return up.StatusChanged(
            replace(
                status,
                replay=self.recording.folder,
                last_step=self.steps,
                paused_at=paused_at,
                rank=self._numbers[self._rank] if len(self.ranks) > 1 else None,
                ranks=self._world if len(self.ranks) > 1 else 1,
            )
        )

    def _hooks_of(self, path: str) -> up.HooksListed:
        end = self._ends[self._at - 1] + 1 if self._at else self._load_end() + 1
        for batch in reversed(self.recording.batches[:end]):
            for u in reversed(batch):
                if isinstance(u, up.HooksListed) and u.path == path:
                    return u
        return up.HooksListed(path, ())


class UnreadableRecording:
    """A folder `modscope replay` cannot read, under the app's commands: the app opens on its
    error screen, which says why (`q` quits, status 2)."""

    session = None

    def __init__(self, folder: str, error: RecordingError) -> None:
        self.folder = folder
        self.error = error

    def load(self) -> list[up.Update]:
        file = self.error.file or self.folder  # the folder itself, when no one file is at fault
        error = UserError(str(self.error), "RecordingError", file, self.error.line, Phase.LOAD)
        status = up.SessionStatus(self.folder, replay=self.folder)
        return [up.StatusChanged(status), up.LoadFailed(error)]

    def handle(self, command: cmd.Command) -> list[up.Update]:
        return []

    def close(self) -> list[up.Update]:
        return []


def replay_factory(
    recordings: Recording | Sequence[Recording] | RecordingError, *, folder: str = ""
) -> Callable[
    [Callable[[Sequence[up.Update]], None], Callable[[], cmd.Command]],
    ReplayController | UnreadableRecording,
]:
    """What the app's thread builds its controller with, for `modscope replay DIR`: the
    recordings read, or the `RecordingError` that says why the `folder` could not be read."""

    def make(emit: Callable[[Sequence[up.Update]], None], wait: Callable[[], cmd.Command]):
        if isinstance(recordings, RecordingError):
            return UnreadableRecording(folder, recordings)
        return ReplayController(recordings, emit=emit, wait=wait)

    return make
