"""The controller's pauses: where an iteration waits for the user, and how the answer steers it.

A `pause` hook, a tripped break condition, or Ctrl-C between phases holds the iteration inside
the controller's command: `PauseLoop` hands what it has so far over, then takes commands from
`wait()` until the user answers. The protocol's command sets are `commands.QUERIES` (served
while it waits), `commands.GOES_ON` (the iteration goes on), `commands.ABANDONS` and `Quit`
(the iteration unwinds) and `commands.QUEUED_AT_PAUSE` (the thread shell keeps them for later).
"""

from __future__ import annotations

import sys
from collections.abc import Callable
from dataclasses import replace
from enum import Enum

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.core.contract.steps import BreakEvent, HookEvent, PhaseResult
from modscope.core.hooks.manager import EventDraft, IterationAbandoned, events_of
from modscope.core.session import Session

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # Python 3.10: torch and textual both install typing_extensions
    from typing_extensions import assert_never

Wait = Callable[[], cmd.Command]
"""Where a pause takes the user's next command (the thread shell's; it sends `Quit` to stop)."""


class Through(Enum):
    """How far `s` / `n` pressed at a pause run, past any further pause."""

    PHASE = "phase"
    ITERATION = "iteration"


class PauseLoop:
    """One controller's pauses. `run_phases` runs a request phase by phase; a pause inside it
    (`at_hook`, `at_break`, or Ctrl-C after `interrupt`) shows its update with `show`, then
    serves the queries `wait` gives with `serve` until an answer: it returns to let the
    iteration go on, or raises `IterationAbandoned` and the session unwinds it. Without `wait`
    (no one to answer) and once `closing`, every pause abandons its iteration at once."""

    def __init__(
        self,
        wait: Wait | None,
        *,
        show: Callable[[up.Update], None],
        serve: Callable[[cmd.Command], None],
    ) -> None:
        self._wait = wait
        self._show = show
        self._serve = serve
        self.paused_at: str | None = None
        """Where the iteration is held (for the status line); None when it is not."""
        self.closing = False
        """The session is closing or the user quit: a pause abandons its iteration at once."""
        self._interrupted = False  # Ctrl-C in the app: pause at the next phase boundary
        self._skip = False  # `s` / `n` at a pause: on past further pauses
        self._through: Through | None = None
        self._abandoned_by: cmd.Command | None = None

    def interrupt(self) -> None:
        """Ctrl-C (from another thread): pause the request under way at its next phase boundary."""
        self._interrupted = True

    def after_command(self) -> cmd.Command | None:
        """The command is over: a Ctrl-C was for it, not the next one. Returns the answer that
        abandoned its iteration at a pause, if any (`commands.ABANDONS` run now)."""
        self._interrupted = False
        later, self._abandoned_by = self._abandoned_by, None
        return later

    def run_phases(self, s: Session, *, whole_iteration: bool) -> PhaseResult:
        """`s` (the rest of the iteration) or `n` (one phase), one phase at a time, so that
        `s` / `n` pressed at a pause can widen or narrow what runs."""
        events: list[HookEvent] = []
        try:
            while True:
                result = s.run_phase()
                events.extend(result.events)
                through, self._through = self._through, None
                if through is Through.PHASE:  # `n` at a pause: this phase was the last to run
                    whole_iteration = False
                elif through is Through.ITERATION:  # `s` at a pause: on to the end
                    whole_iteration = True
                if result.record or result.error or result.abandoned or not whole_iteration:
                    break
                if self._interrupted:
                    self._interrupted = False
                    try:
                        self._between_phases(s)
                    except IterationAbandoned:
                        # The session stays between phases; the answer (`u`, `g`, `r`, `q`)
                        # restores, reloads or closes it.
                        return replace(result, events=tuple(events), abandoned=True)
        finally:
            self._skip = False
        return replace(result, events=tuple(events))

    def at_hook(self, draft: EventDraft) -> None:
        """A `pause` hook fired (inside the hook, in the user's forward or backward): show what
        arrived, then wait for the user's answer."""
        if self._passes():
            return
        (event,) = events_of([draft], [0])
        self._hold(f"{draft.module or '(root)'} ({draft.kind.value})", up.Paused(event))

    def at_break(self, event: BreakEvent) -> None:
        """An armed break condition tripped: the iteration waits there as at a pause hook."""
        if self._passes():
            return
        where = event.module if event.module is not None else event.phase.value
        self._hold(f"break {event.condition} at {where or '(root)'}", up.BreakHit(event))

    def _between_phases(self, s: Session) -> None:
        """Ctrl-C: hold the iteration before its next phase until the user answers."""
        where = f"step {s.step + 1} before {s.next_phase.value} (Ctrl-C)"
        told = (
            f"Ctrl-C: step {s.step + 1} paused before {s.next_phase.value}; c continues, "
            "u undoes the step, s / n run on, q quits"
        )
        self._hold(where, up.Notice(told, "warning"))

    def _passes(self) -> bool:
        """Whether the iteration goes on past this pause unasked (`s` / `n` answered an
        earlier one); raises `IterationAbandoned` when no one can answer."""
        if self.closing or self._wait is None:
            raise IterationAbandoned()
        return self._skip

    def _hold(self, paused_at: str, shown: up.Update) -> None:
        """Show `shown`, then serve commands until the user answers."""
        wait = self._wait
        if wait is None:  # no one to answer: as at a pause hook
            raise IterationAbandoned()
        self.paused_at = paused_at
        self._interrupted = False  # this pause is where a Ctrl-C would have stopped
        self._show(shown)
        try:
            while not self._answered(wait()):
                pass
        finally:
            self.paused_at = None

    def _answered(self, command: cmd.Command) -> bool:
        """Serve `command` at the pause; True when it answers it and the iteration goes on
        (an answer that abandons the iteration raises `IterationAbandoned`)."""
        if isinstance(command, cmd.QUERIES):
            self._serve(command)
            return False
        if isinstance(command, cmd.ABANDONS):
            self._abandoned_by = command
            raise IterationAbandoned()
        match command:
            case cmd.Step():
                self._run_on(Through.ITERATION)
            case cmd.NextPhase():
                self._run_on(Through.PHASE)
            case cmd.Continue():
                pass
            case cmd.Quit():
                self._abandoned_by = command
                self.closing = True
                raise IterationAbandoned()
            case cmd.ToggleTraining() | cmd.ArmBreaks() | cmd.CollectLayers() | cmd.SwitchRank():
                # QUEUED_AT_PAUSE: the thread shell keeps these queued until the iteration is
                # over; handed over here by a direct caller, they answer like `Continue`.
                pass
            case _:
                assert_never(command)
        return True

    def _run_on(self, through: Through) -> None:
        """`s` / `n` at a pause: on past any further pause to the end of the iteration / phase."""
        self._skip = True
        self._through = through
