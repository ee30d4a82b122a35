"""The UI's picture of the session: the latest snapshots the worker sent, and lookups over them.

Only the app's thread touches a ModelView; widgets read it to draw themselves. It holds frozen
snapshot types only (no torch).
"""

from __future__ import annotations

import enum
import math
import os
from collections import deque
from collections.abc import Iterable, Sequence
from dataclasses import dataclass

from modscope.control.updates import (
    ModelLayout,
    OtherTimeline,
    SessionStatus,
    TensorsSummarized,
)
from modscope.core.contract.bounded import HISTORY_LIMIT, append_bounded
from modscope.core.contract.findings import Finding, Severity
from modscope.core.contract.hook_spec import HookInfo, HookKind
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import BreakEvent, HookEvent, StepRecord, UserError
from modscope.core.contract.tensors import TensorInfo, TensorSummary
from modscope.core.contract.tree import ModuleInfo, Unregistered

LAYER_STEPS_KEPT = 16
"""Steps of layer statistics kept for the layers view's sparklines (at least its 12): one step
holds an object per module, so a model of 13,000 modules would hold millions over a long run."""


class NodeKind(enum.Enum):
    """What a node of the module tree is."""

    MODULE = "module"
    TENSOR = "tensor"
    UNREGISTERED = "unregistered"
    FOLD = "fold"
    MORE = "more"


@dataclass(frozen=True)
class NodeRef:
    """What a node of the module tree stands for (the detail pane shows the same).

    MODULE, TENSOR, UNREGISTERED: `path` is the thing's own path. FOLD: `path` is the parent
    module, the run is `children[start:stop]`. MORE: `start` is the first entry of its parent
    not shown yet.
    """

    kind: NodeKind
    path: str
    start: int = 0
    stop: int = 0


class ModelView:
    """Layout, summaries, history, findings and hooks as last reported by the worker."""

    def __init__(self, script_path: str) -> None:
        self.script_path = script_path
        self.status = SessionStatus(os.path.basename(script_path))
        self.layout: ModelLayout | None = None
        self.notes: tuple[str, ...] = ()
        self.load_error: UserError | None = None
        self.last_error: UserError | None = None
        self.ever_loaded = False
        self.version = -1
        self.summaries: dict[str, TensorSummary] = {}
        self.grads: dict[str, TensorSummary | None] = {}
        self.baseline: dict[str, TensorSummary] = {}
        self.history: deque[StepRecord] = deque(maxlen=HISTORY_LIMIT)
        self.changed: frozenset[str] = frozenset()
        self.sampled: frozenset[str] = frozenset()
        """Keys the last diff compared by digest and sample (`StateDiff.sampled`)."""
        self.findings: tuple[Finding, ...] = ()
        self.findings_at: dict[str, list[Finding]] = {}
        self.findings_below: dict[str, Severity] = {}
        self.hooks: dict[str, tuple[HookInfo, ...]] = {}
        self.seen: dict[str, dict[HookKind, HookEvent]] = {}
        """The last event of each of modscope's hook kinds, by module path."""
        self.paused: HookEvent | None = None
        """The hook firing a pause hook holds the iteration at, while it does."""
        self.broke: BreakEvent | None = None
        """The break condition holding the iteration now, if one does."""
        """The hook firing a pause hook holds the iteration at, while it does."""
        self.layers: deque[LayerStep] = deque(maxlen=LAYER_STEPS_KEPT)
        """Each module's statistics after each step since the layers view was first opened."""
        self.other: OtherTimeline | None = None
        """The original timeline a rewind left ("what if"), for the loss plot."""

    # -- applying updates ----------------------------------------------------------------------

    def load(self, layout: ModelLayout, notes: tuple[str, ...]) -> None:
        """A freshly loaded script: everything from the previous one is dropped."""
        self.layout = layout
        self.notes = notes
        self.load_error = None
        self.last_error = None
        self.ever_loaded = True
        self.version = -1
        self.summaries, self.grads, self.baseline = {}, {}, {}
        self.history.clear()
        self.layers.clear()
        self.changed = frozenset()
        self.sampled = frozenset()
        self.set_findings(())
        self.hooks.clear()
        self.seen.clear()
        self.paused = None
        self.broke = None
        self.other = None

    def relayout(self, layout: ModelLayout) -> None:
        self.layout = layout
        self.hooks.clear()
        self._index_findings()

    def apply_summaries(self, update: TensorsSummarized) -> None:
        if update.replace:
            if update.version < self.version:
                return
            self.version = update.version
            self.summaries = dict(update.summaries)
            self.grads = dict(update.grads)
            if update.baseline:
                self.baseline = dict(update.summaries)
        elif update.version == self.version:
            self.summaries.update(update.summaries)
            self.grads.update(update.grads)

    def saw(self, events: Sequence[HookEvent]) -> None:
        """Remember the last event of each hook kind on each module."""
        seen = self.seen
        for e in events:
            by_kind = seen.get(e.module)
            if by_kind is None:
                by_kind = seen[e.module] = {}
            by_kind[e.kind] = e

    def add_record(self, record: StepRecord, *, kept: int | None = None) -> None:
        """`kept`: how many records the session keeps; the history keeps no more, so a large
        model's records are not held here past what `--memory-budget` lets the session hold."""
        limit = min(kept, HISTORY_LIMIT) if kept else HISTORY_LIMIT
        self.history = append_bounded(self.history, record, limit)
        self.changed = frozenset(record.diff.changed)
        self.sampled = frozenset(record.diff.sampled)

    def add_layers(self, step: LayerStep) -> None:
        """A step's layer statistics; they replace any of that step or later (a replay paints
        its steps again from the start after moving back)."""
        while self.layers and self.layers[-1].step >= step.step:
            self.layers.pop()
        self.layers.append(step)

    def back_to(self, step: int) -> None:
        """The session was rewound to `step`: the layer statistics of later steps are gone."""
        while self.layers and self.layers[-1].step > step:
            self.layers.pop()

    def set_findings(self, findings: Iterable[Finding]) -> None:
        order = {Severity.ERROR: 0, Severity.WARNING: 1, Severity.INFO: 2}
        self.findings = tuple(sorted(findings, key=lambda f: order.get(f.severity, 3)))
        self._index_findings()

    def _index_findings(self) -> None:
        self.findings_at = {}
        self.findings_below = {}
        for f in self.findings:
            # Every path a finding names is marked: each divergent tensor of a rank-divergence,
            # each name of a shared parameter.
            nodes = {n for p in (f.path, *f.paths) if (n := self.node_for(p)) is not None}
            for node in sorted(nodes, key=str):
                self._index_finding(f, node)

    def _index_finding(self, f: Finding, node: str) -> None:
        self.findings_at.setdefault(node, []).append(f)
        owner = self.owner(node)
        while owner is not None:
            worst = self.findings_below.get(owner)
            if worst is None or f.severity.rank < worst.rank:
                self.findings_below[owner] = f.severity
            owner = self.owner(owner)

    # -- lookups -------------------------------------------------------------------------------

    @property
    def loaded(self) -> bool:
        return self.layout is not None and self.load_error is None

    @property
    def last_record(self) -> StepRecord | None:
        return self.history[-1] if self.history else None

    def module(self, path: str) -> ModuleInfo | None:
        return self.layout.modules.get(path) if self.layout else None

    def tensor(self, path: str) -> TensorInfo | None:
        return self.layout.tensors.get(path) if self.layout else None

    def unregistered(self, path: str) -> Unregistered | None:
        if self.layout is None:
            return None
        owner = self.layout.owner(path)
        for u in self.layout.unregistered.get(owner or "", ()):
            if u.path == path:
                return u
        return None

    def owner(self, path: str) -> str | None:
        """The module a node hangs from (None for the root)."""
        if self.layout is None or path == "":
            return None
        if path in self.layout.modules or path in self.layout.tensors:
            return path.rpartition(".")[0]
        return self.layout.owner(path)

    def node_for(self, path: str) -> str | None:
        """The tree node a finding's path points at: itself, or the nearest thing above it.

        Finding paths use Python subscripts for containers (`blocks[0]`, `heads['q']`), so
        brackets and attributes are stripped from the end until a known node remains.
        """
        if self.layout is None:
            return None
        layout = self.layout
        while True:
            if path in layout.modules or path in layout.tensors:
                return path
            if self.unregistered(path) is not None:
                return path
            inside = self._first_unregistered_in(path)
            if inside is not None:
                return inside
            if not path:
                return None
            if path.endswith("]") and "[" in path:
                path = path[: path.rindex("[")]
            else:
                path = path.rpartition(".")[0]

    def _first_unregistered_in(self, path: str) -> str | None:
        """The first unregistered object inside the container attribute `path`, if any."""
        if self.layout is None or not path:
            return None
        for items in self.layout.unregistered.values():
            for u in items:
                if u.path.startswith((path + "[", path + "{")):
                    return u.path
        return None

    def module_paths(self) -> list[str]:
        return list(self.layout.modules) if self.layout else []

    def owners(self, path: str) -> list[str]:
        """The modules a node hangs under, the root first."""
        chain: list[str] = []
        owner = self.owner(path)
        while owner is not None:
            chain.append(owner)
            owner = self.owner(owner)
        chain.reverse()
        return chain

    def matching(self, text: str) -> list[str]:
        """Paths of the modules (not the root), tensors and unregistered objects containing
        `text`, in any case."""
        if self.layout is None:
            return []
        layout = self.layout
        needle = text.lower()
        found = [p for p in layout.modules if p and needle in p.lower()]
        found += [p for p in layout.tensors if needle in p.lower()]
        found += [
            u.path for us in layout.unregistered.values() for u in us if needle in u.path.lower()
        ]
        return found

    def with_owners(self, paths: Iterable[str]) -> set[str]:
        """The paths and every module above them."""
        keep: set[str] = set()
        for path in paths:
            p: str | None = path
            while p is not None and p not in keep:
                keep.add(p)
                p = self.owner(p)
        return keep

    def tree_rows(self, limit: int) -> int:
        """Rows the module tree takes with every node expanded; counting stops past `limit`."""
        if self.layout is None:
            return 0
        layout = self.layout
        rows = 0
        for path, m in layout.modules.items():
            rows += 1 + len(m.parameters) + len(m.buffers)
            rows += len(layout.unregistered.get(path, ())) + len(layout.folds.get(path, ()))
            if rows > limit:
                break
        return rows

    def history_of(self, path: str) -> list[float | None]:
        """The mean of a state entry after each recorded step (its value, for a scalar)."""
        out: list[float | None] = []
        for record in self.history:
            s = record.state.get(path)
            out.append(s.mean if s is not None else None)
        return out

    def grad_history_of(self, path: str) -> list[float | None]:
        """The norm of a parameter's gradient after each recorded step."""
        out: list[float | None] = []
        for record in self.history:
            g = record.grads.get(path)
            out.append(g.norm if g is not None else None)
        return out

    def losses(self) -> list[float | None]:
        return [r.loss for r in self.history]

    def other_losses(self) -> tuple[float | None, ...]:
        """The original timeline's loss after each of its steps (empty before a rewind)."""
        return self.other.losses if self.other is not None else ()

    def before(self, key: str) -> TensorSummary | None:
        """A state entry as it was before the last recorded step."""
        if len(self.history) >= 2:
            return self.history[-2].state.get(key)
        if len(self.history) == 1:
            return self.baseline.get(key)
        return None


def finite(values: Iterable[float | None]) -> list[float]:
    return [v for v in values if v is not None and math.isfinite(v)]
