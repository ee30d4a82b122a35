"""What the session controller hands to the UI: frozen snapshots, one small dataclass per kind
of news.

The controller turns each command into a list of these; the thread shell appends them to an
outbox and the app drains it on its own thread and applies them in order. Nothing here holds a
tensor or imports torch: this stream is what a recording persists and a replay paints.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from modscope.core.contract.findings import Finding
from modscope.core.contract.hook_spec import HookInfo
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import BreakEvent, HookEvent, Phase, StepRecord, UserError
from modscope.core.contract.tensors import TensorInfo, TensorSummary
from modscope.core.contract.timelines import TimelineComparison
from modscope.core.contract.tree import Inventory, ModuleInfo, Unregistered


@dataclass(frozen=True)
class ModelLayout:
    """The module tree of the loaded model with the indexes the UI looks things up by.

    `folds` maps a module path to the runs of its children that may fold into one node,
    as `(start, count)` pairs over `ModuleInfo.children` (computed by the controller with
    `fold_runs`, which needs torch's inventory code). `summarize_all`: every tensor's summary
    comes after each command; otherwise only those the UI says it shows (`ShowTensors`).
    """

    script: str
    model_name: str
    inventory: Inventory
    modules: Mapping[str, ModuleInfo]
    tensors: Mapping[str, TensorInfo]
    unregistered: Mapping[str, tuple[Unregistered, ...]]
    folds: Mapping[str, tuple[tuple[int, int], ...]]
    generation: int = 0
    summarize_all: bool = True

    def owner(self, path: str) -> str | None:
        """The module path a tensor or unregistered object hangs from, or None when unknown."""
        if path in self.modules:
            return path.rpartition(".")[0] if path else None
        if path in self.tensors:
            return path.rpartition(".")[0]
        for owner, items in self.unregistered.items():
            if any(u.path == path for u in items):
                return owner
        return None


@dataclass(frozen=True)
class SessionStatus:
    """Where the session stands, for the status line and for deciding which keys work now.

    The controller fills in the session's facts; `busy`, `running` and `queued` are the thread
    shell's, as of the last drain (`Batch`). `replay` is the recording's folder when the app
    replays one (no live model), `last_step` the last step it holds; `rank` and `ranks` say
    which rank of a multi-rank recording is shown. `fork` is the step where this timeline
    parts from the original one a rewind left (None before any).
    """

    script: str
    loaded: bool = False
    step: int = 0
    next_phase: Phase | None = None
    in_iteration: bool = False
    phases: tuple[Phase, ...] = ()
    training: bool = True
    last_loss: float | None = None
    last_output: TensorSummary | None = None
    busy: bool = False
    running: bool = False
    paused_at: str | None = None
    queued: int = 0
    tags: tuple[str, ...] = ()
    hooks: int = 0
    replay: str | None = None
    last_step: int = 0
    rank: int | None = None
    ranks: int = 1
    breaks: tuple[str, ...] = ()
    rewind: bool = False
    fork: int | None = None


@dataclass(frozen=True)
class Loaded:
    """A script loaded (at start or on reload): the tree to show and what to know about it."""

    layout: ModelLayout
    notes: tuple[str, ...] = ()
    loaded_at: float = 0.0


@dataclass(frozen=True)
class Repaint:
    """What follows paints the session anew from its start, up to `step` (a replay moved
    back): the panes drop what they showed (log, hook events, history)."""

    step: int


@dataclass(frozen=True)
class LoadFailed:
    """The script did not load: syntax error, exception at import, no model."""

    error: UserError


@dataclass(frozen=True)
class LayoutChanged:
    """The model's structure or train/eval flags changed: a new inventory of the same model."""

    layout: ModelLayout


@dataclass(frozen=True)
class StatusChanged:
    status: SessionStatus


@dataclass(frozen=True)
class PhaseDone:
    """A phase or a whole iteration ended; `record` is set when an iteration completed."""

    step: int
    phase: Phase
    record: StepRecord | None = None
    error: UserError | None = None
    abandoned: bool = False
    kept: int | None = None
    """How many step records the session keeps (fewer for a large model under
    `--memory-budget`); the app's history keeps no more. None: not said (an older recording)."""


def history_shown(history: Iterable[StepRecord], kept: int | None) -> list[PhaseDone]:
    """The iterations a session's history holds, as the app is told of them (after a load, a
    rewind, or at a break in the user's own loop)."""
    return [PhaseDone(r.step, Phase.OPTIMIZER, r, kept=kept) for r in history]


@dataclass(frozen=True)
class TensorsSummarized:
    """Summaries of parameters, buffers and gradients as they are at `version`.

    `replace` starts a new version (what the UI showed before is stale); otherwise these are
    added to the current version (tensors that became visible).
    """

    version: int
    summaries: Mapping[str, TensorSummary] = field(default_factory=dict)
    grads: Mapping[str, TensorSummary | None] = field(default_factory=dict)
    replace: bool = True
    baseline: bool = False


@dataclass(frozen=True)
class Printed:
    """A line the user's script printed."""

    line: str


@dataclass(frozen=True)
class HookEventsSeen:
    events: tuple[HookEvent, ...]


@dataclass(frozen=True)
class InternalError:
    """A bug in modscope (not in the user's script): the session goes on; the traceback is kept
    for the log pane and written to `log_file`."""

    message: str
    traceback: str
    log_file: str | None = None


@dataclass(frozen=True)
class Notice:
    """A message for the log (and a notification when `severity` is not "information")."""

    message: str
    severity: str = "information"


@dataclass(frozen=True)
class FindingsChanged:
    """Every finding of the doctor so far (static ones at load, then those of the steps);
    `new`: those first seen by the command that sent this."""

    findings: tuple[Finding, ...]
    new: tuple[Finding, ...] = ()


@dataclass(frozen=True)
class Paused:
    """A `pause` hook holds the iteration: where, and what arrived (args/output or grads)."""

    event: HookEvent


@dataclass(frozen=True)
class BreakHit:
    """An armed break condition tripped and holds the iteration: where, and the values."""

    event: BreakEvent


@dataclass(frozen=True)
class HooksListed:
    """Every hook that can fire on the module at `path` (a `list_hooks` snapshot)."""

    path: str
    hooks: tuple[HookInfo, ...]


@dataclass(frozen=True)
class ValuesRead:
    """One page of a tensor's values (flattened, row-major), for the values view."""

    path: str
    grad: bool
    offset: int
    values: tuple[object, ...]
    numel: int
    shape: tuple[int, ...]
    note: str | None = None


@dataclass(frozen=True)
class OtherTimeline:
    """After a rewind: the original timeline kept for "what if" (`core.contract.timelines`): where
    the timelines part and the original's loss after each of its steps, for the loss plot."""

    fork: int
    end: int
    losses: tuple[float | None, ...] = ()


@dataclass(frozen=True)
class TimelinesCompared:
    """The answer to `CompareTimelines`: this timeline against the original at one step, or
    `error`: why there is nothing to compare (no original timeline yet)."""

    comparison: TimelineComparison | None = None
    error: str | None = None


@dataclass(frozen=True)
class LayersSeen:
    """Each module's statistics after an iteration (sent once `CollectLayers` asked for them)."""

    step: LayerStep


Update = (
    Loaded
    | Repaint
    | LoadFailed
    | LayoutChanged
    | StatusChanged
    | PhaseDone
    | TensorsSummarized
    | Printed
    | HookEventsSeen
    | Notice
    | InternalError
    | FindingsChanged
    | HooksListed
    | Paused
    | BreakHit
    | ValuesRead
    | OtherTimeline
    | TimelinesCompared
    | LayersSeen
)


@dataclass(frozen=True)
class Batch:
    """What one drain of the outbox brings: the updates in order, and where the command queue
    stands now.

    `done_through` is the highest command id such that every command submitted with that id or
    a lower one has run (a command held at a pause hook counts as run: it waits for the user).
    """

    updates: tuple[Update, ...] = ()
    done_through: int = 0
    busy: bool = False
    running: bool = False
    queued: int = 0
