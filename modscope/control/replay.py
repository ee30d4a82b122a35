"""The replay controller: answers the app's commands from a recording instead of a live model.

It opens at the last recorded step. `Step`/`NextPhase` move on one recorded step, `Rewind` back
one, `GoToStep` to any; each move that goes back repaints the session from its start (a
`Repaint` update, then the recorded updates up to that step). A recording of several ranks
(`run --record DIR` under torchrun) switches ranks with `SwitchRank`, at the same step.
Commands that need a live model (hooks, train/eval, reload, values) get a notice instead.
Torch-free, like the recording.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import replace

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.recording import Recording

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
        self._last_status: up.SessionStatus | None = None

    @property
    def session(self) -> Recording:
        return self.recording

    @property
    def steps(self) -> int:
        """How many iterations the recording holds."""
        return len(self._ends)

    def load(self) -> list[up.Update]:
        return self._paint(self.steps)

    def close(self) -> list[up.Update]:
        return []

    def handle(self, command: cmd.Command) -> list[up.Update]:
        if isinstance(command, cmd.Step | cmd.NextPhase):
            if self._at >= self.steps:
                return [up.Notice(f"the recording ends at step {self.steps}"), self._status()]
            first = self._ends[self._at - 1] + 1 if self._at else self._load_end() + 1
            self._at += 1
            return [*self._updates(first, self._ends[self._at - 1] + 1), self._status()]
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
        return self._ends[0] - 1 if self._ends else len(self.recording.batches) - 1

    def _paint(self, step: int) -> list[up.Update]:
        """The session from its start to `step`, as if it had just run (`Repaint` first)."""
        self._at = step
        end = self._ends[step - 1] + 1 if step else self._load_end() + 1
        return [up.Repaint(step), *self._updates(0, end), self._status()]

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
        # is the step shown.
        return up.StatusChanged(
            replace(
                status,
                replay=self.recording.folder,
                last_step=self.steps,
                paused_at=None,
                rank=self._rank if len(self.ranks) > 1 else None,
                ranks=len(self.ranks),
            )
        )

    def _hooks_of(self, path: str) -> up.HooksListed:
        end = self._ends[self._at - 1] + 1 if self._at else self._load_end() + 1
        for batch in reversed(self.recording.batches[:end]):
            for u in reversed(batch):
                if isinstance(u, up.HooksListed) and u.path == path:
                    return u
        return up.HooksListed(path, ())


def replay_factory(
    recordings: Recording | Sequence[Recording],
) -> Callable[[Callable[[Sequence[up.Update]], None], Callable[[], cmd.Command]], ReplayController]:
    """What the app's thread builds its controller with, for `modscope replay DIR`."""

    def make(emit: Callable[[Sequence[up.Update]], None], wait: Callable[[], cmd.Command]):
        return ReplayController(recordings, emit=emit, wait=wait)

    return make
