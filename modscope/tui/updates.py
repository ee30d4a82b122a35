"""What the session worker hands to the UI: frozen snapshots, one small dataclass per kind of news.

The worker appends these to an outbox from its thread; the app drains the outbox on its own
thread and applies them in order. Nothing here holds a tensor or imports torch.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from modscope.core.types import (
    Finding,
    HookEvent,
    HookInfo,
    Inventory,
    ModuleInfo,
    Phase,
    StepRecord,
    TensorInfo,
    TensorSummary,
    Unregistered,
    UserError,
)


@dataclass(frozen=True)
class ModelLayout:
    """The module tree of the loaded model with the indexes the UI looks things up by.

    `folds` maps a module path to the runs of its children that may fold into one node,
    as `(start, count)` pairs over `ModuleInfo.children` (computed by the worker with
    `fold_runs`, which needs torch's inventory code).
    """

    script: str
    model_name: str
    inventory: Inventory
    modules: Mapping[str, ModuleInfo]
    tensors: Mapping[str, TensorInfo]
    unregistered: Mapping[str, tuple[Unregistered, ...]]
    folds: Mapping[str, tuple[tuple[int, int], ...]]
    generation: int = 0

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
    """Where the session stands, for the status line and for deciding which keys work now."""

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
    completed: int = 0
    tags: tuple[str, ...] = ()
    hooks: int = 0


@dataclass(frozen=True)
class Loaded:
    """A script loaded (at start or on reload): the tree to show and what to know about it."""

    layout: ModelLayout
    notes: tuple[str, ...] = ()
    loaded_at: float = 0.0


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
class Notice:
    """A message for the log (and a notification when `severity` is not "information")."""

    message: str
    severity: str = "information"


@dataclass(frozen=True)
class FindingsChanged:
    findings: tuple[Finding, ...]
    source: str = "doctor"


@dataclass(frozen=True)
class Paused:
    """A `pause` hook holds the iteration: where, and what arrived (args/output or grads)."""

    event: HookEvent


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


Update = (
    Loaded
    | LoadFailed
    | LayoutChanged
    | StatusChanged
    | PhaseDone
    | TensorsSummarized
    | Printed
    | HookEventsSeen
    | Notice
    | FindingsChanged
    | HooksListed
    | Paused
    | ValuesRead
)
