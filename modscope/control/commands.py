"""What the app asks of the session controller: one small frozen dataclass per command (torch-free).

`Step`, `NextPhase` and `Continue` also answer a pause hook: at a pause, `Step` runs on to the end
of the iteration and `NextPhase` to the end of the phase (past any pause), `Continue` to the next
pause. Queries (`QUERIES`) run before queued steps, and also while a pause holds an iteration.
The pause protocol's command sets (served, answers, queued) are declared once, at the end.
"""

from __future__ import annotations

from dataclasses import dataclass

from modscope.core.contract.hook_spec import HookInfo, HookSpec


@dataclass(frozen=True)
class Step:
    """One whole iteration (or the rest of a partial one)."""


@dataclass(frozen=True)
class NextPhase:
    """The next phase only."""


@dataclass(frozen=True)
class Continue:
    """At a pause hook: on to the next pause, or the end of the request."""


@dataclass(frozen=True)
class Rewind:
    """Back one step (a replay: the recorded step before the one shown)."""


@dataclass(frozen=True)
class GoToStep:
    """Show the session as it was after step `step` (0: before the first step)."""

    step: int


@dataclass(frozen=True)
class CompareTimelines:
    """What if: this timeline's state after the last step against the original timeline's
    after the same step (answered by `TimelinesCompared`)."""


@dataclass(frozen=True)
class SwitchRank:
    """A replay of several ranks: show the rank `by` places on (wrapping around)."""

    by: int = 1


@dataclass(frozen=True)
class ToggleTraining:
    """Switch the whole model between train and eval mode."""


@dataclass(frozen=True)
class Reload:
    """Close the session (every hook removed) and load the script again."""


@dataclass(frozen=True)
class Quit:
    """Abandon a paused iteration and stop (sent by the thread shell when the app leaves)."""


@dataclass(frozen=True)
class ListHooks:
    """Every hook that can fire on the module at `path`."""

    path: str


@dataclass(frozen=True)
class ReadValues:
    """One page of a tensor's values (or of its gradient) for the values view."""

    path: str
    offset: int
    count: int
    grad: bool = False


@dataclass(frozen=True)
class ShowTensors:
    """Tensors the UI now shows: keep their summaries fresh."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class AttachHook:
    """Attach a modscope hook (the hook dialog). A legacy backward hook comes with an observing
    backward hook on the same module, so that both gradients are shown side by side."""

    spec: HookSpec


@dataclass(frozen=True)
class ArmBreaks:
    """Arm exactly these break conditions (`--break` texts; none: disarm). Not a query: at a
    pause it waits for the iteration's end, so no watch is attached halfway through one."""

    conditions: tuple[str, ...]


@dataclass(frozen=True)
class CollectLayers:
    """The layers view was opened: collect each module's statistics from the next iteration
    on (`LayersSeen` after each). Not a query: at a pause it waits for the iteration's end, so
    no iteration is seen in part."""


@dataclass(frozen=True)
class DetachHook:
    """Detach a hook the hooks pane lists: modscope's, or (the user confirmed) another's."""

    hook: HookInfo


Command = (
    Step
    | NextPhase
    | Continue
    | Rewind
    | GoToStep
    | CompareTimelines
    | SwitchRank
    | ToggleTraining
    | Reload
    | Quit
    | ListHooks
    | ReadValues
    | ShowTensors
    | AttachHook
    | DetachHook
    | ArmBreaks
    | CollectLayers
)

# The pause protocol: what each command does while a pause (a `pause` hook, a break, Ctrl-C)
# holds an iteration. QUERIES, GOES_ON, ABANDONS and QUEUED_AT_PAUSE split the commands, `Quit`
# aside, so that a new command has to be placed in one.

QUERIES = (ListHooks, ReadValues, ShowTensors, AttachHook, DetachHook, CompareTimelines)
"""Commands that jump ahead of queued steps and run at a pause too: the user looks around,
attaches and detaches hooks at a breakpoint."""

GOES_ON = (Step, NextPhase, Continue)
"""Answers to a pause that let the iteration go on: `Continue` to the next pause, `Step` /
`NextPhase` past any further pause to the end of the iteration / phase."""

ABANDONS = (Reload, Rewind, GoToStep)
"""Answers to a pause that abandon the iteration: it unwinds, then the command runs. `Quit`
(which the thread shell sends when the app leaves) abandons it too, and nothing runs after."""

PAUSE_ANSWERS = GOES_ON + ABANDONS
"""What ends a pause when the user submits it after the pause began (the thread shell hands the
first one over; earlier steps stay queued)."""

QUEUED_AT_PAUSE = (ToggleTraining, ArmBreaks, CollectLayers, SwitchRank)
"""Neither served nor an answer at a pause: they wait in the queue for the iteration's end, so
that no mode switch, break or layer statistics land halfway through one."""

RUNS_THE_MODEL = (
    Step,
    NextPhase,
    Continue,
    Reload,
    Rewind,
    GoToStep,
    ToggleTraining,
    ArmBreaks,
    CollectLayers,
)
"""What the app at a break in the user's own loop (`modscope.watch()`) answers with a notice:
the user's code runs the model there, not modscope."""

STEPS = (Step, NextPhase)
"""The commands that run the model: what Ctrl-C interrupts."""
