"""Frozen snapshot types that cross from the engine to reports and the UI (no torch here).

These are declarations, the data contract the reports, the app and recordings share (a
recording names these classes), best read together.
"""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

# HookKind and HookAction are declared with the hook spec that parses them; the records here
# carry them, and code that reads these records imports them from here too.
from modscope.core.hook_spec import HookAction, HookId, HookKind


class Phase(str, enum.Enum):
    """Where in an iteration something happened."""

    LOAD = "load"
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    TRAIN_STEP = "train_step"


class Severity(str, enum.Enum):
    """How bad a doctor finding is; ordered from worst to mildest."""

    ERROR = "error"
    WARNING = "warning"
    INFO = "info"

    @property
    def rank(self) -> int:
        return {"error": 0, "warning": 1, "info": 2}[self.value]


class FindingKind(str, enum.Enum):
    """Every kind of finding the doctor reports (docs/design.md section 4)."""

    UNREGISTERED_MODULE = "unregistered-module"
    UNREGISTERED_PARAMETER = "unregistered-parameter"
    UNREGISTERED_TENSOR = "unregistered-tensor"
    BUFFER_GRAD_HISTORY = "buffer-grad-history"
    UNUSED_PARAMETER = "unused-parameter"
    NOT_IN_OPTIMIZER = "not-in-optimizer"
    EVAL_NONDETERMINISTIC = "eval-nondeterministic"
    LEGACY_BACKWARD_HOOK = "legacy-backward-hook"
    NONFINITE = "nonfinite"
    SHARED_PARAMETER = "shared-parameter"
    REUSED_MODULE = "reused-module"
    MODE_MISMATCH = "mode-mismatch"
    DEVICE_MISMATCH = "device-mismatch"
    DTYPE_MISMATCH = "dtype-mismatch"
    STALE_OPTIMIZER = "stale-optimizer"
    FROZEN_IN_OPTIMIZER = "frozen-in-optimizer"
    EXPLODING_GRADIENT = "exploding-gradient"
    VANISHING_GRADIENT = "vanishing-gradient"
    RANK_DIVERGENCE = "rank-divergence"
    UPDATE_RATIO = "update-ratio"
    TRAINING_IN_EVAL = "training-in-eval"
    GRAD_ACCUMULATION = "grad-accumulation"
    TORCH_WARNING = "torch-warning"
    DEAD_UNITS = "dead-units"
    SATURATED = "saturated"

    @property
    def severity(self) -> Severity:
        return SEVERITIES[self]


SEVERITIES: dict[FindingKind, Severity] = {
    FindingKind.UNREGISTERED_MODULE: Severity.ERROR,
    FindingKind.UNREGISTERED_PARAMETER: Severity.ERROR,
    FindingKind.UNREGISTERED_TENSOR: Severity.WARNING,
    FindingKind.BUFFER_GRAD_HISTORY: Severity.ERROR,
    FindingKind.UNUSED_PARAMETER: Severity.WARNING,
    FindingKind.NOT_IN_OPTIMIZER: Severity.ERROR,
    FindingKind.EVAL_NONDETERMINISTIC: Severity.ERROR,
    FindingKind.LEGACY_BACKWARD_HOOK: Severity.WARNING,
    FindingKind.NONFINITE: Severity.ERROR,
    FindingKind.SHARED_PARAMETER: Severity.INFO,
    FindingKind.REUSED_MODULE: Severity.INFO,
    FindingKind.MODE_MISMATCH: Severity.WARNING,
    FindingKind.DEVICE_MISMATCH: Severity.WARNING,
    FindingKind.DTYPE_MISMATCH: Severity.WARNING,
    FindingKind.STALE_OPTIMIZER: Severity.ERROR,
    FindingKind.FROZEN_IN_OPTIMIZER: Severity.INFO,
    FindingKind.EXPLODING_GRADIENT: Severity.WARNING,
    FindingKind.VANISHING_GRADIENT: Severity.WARNING,
    FindingKind.RANK_DIVERGENCE: Severity.ERROR,
    FindingKind.UPDATE_RATIO: Severity.WARNING,
    FindingKind.TRAINING_IN_EVAL: Severity.WARNING,
    FindingKind.GRAD_ACCUMULATION: Severity.ERROR,
    FindingKind.TORCH_WARNING: Severity.WARNING,
    FindingKind.DEAD_UNITS: Severity.WARNING,
    FindingKind.SATURATED: Severity.WARNING,
}
"""How bad each kind of finding is."""


def finite_or_none(value: float | None) -> float | None:
    """A float for strict JSON: NaN and infinities become None."""
    if value is None or not math.isfinite(value):
        return None
    return value


@dataclass(frozen=True)
class TensorSummary:
    """The numbers a person reads about one tensor, captured at one moment.

    Statistics are over the real values (magnitudes for complex tensors) and skip NaN and Inf;
    they are None when there is nothing to compute them over (empty, meta, all non-finite).
    """

    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    norm: float | None = None
    min: float | None = None
    max: float | None = None
    mean: float | None = None
    std: float | None = None
    nan: int = 0
    inf: int = 0
    zeros: int = 0
    values: tuple[Any, ...] | None = None
    layout: str = "strided"
    requires_grad: bool = False
    grad_fn: str | None = None
    note: str | None = None

    @property
    def all_zero(self) -> bool:
        return self.numel > 0 and self.zeros == self.numel

    def to_json(self) -> dict[str, Any]:
        """The tensor summary object of docs/design.md section 2 (strict JSON: non-finite floats
        as None)."""
        out: dict[str, Any] = {
            "shape": list(self.shape),
            "dtype": self.dtype,
            "device": self.device,
            "numel": self.numel,
            "norm": finite_or_none(self.norm),
            "min": finite_or_none(self.min),
            "max": finite_or_none(self.max),
            "mean": finite_or_none(self.mean),
            "std": finite_or_none(self.std),
            "nan": self.nan,
            "inf": self.inf,
        }
        if self.values is not None:
            out["values"] = [_json_value(v) for v in self.values]
        if self.layout != "strided":
            out["layout"] = self.layout
        if self.grad_fn is not None:
            out["grad_fn"] = self.grad_fn
        if self.note is not None:
            out["note"] = self.note
        return out


def _json_value(v: Any) -> Any:
    if isinstance(v, float):
        return finite_or_none(v)
    if isinstance(v, complex):
        return [finite_or_none(v.real), finite_or_none(v.imag)]
    return v


@dataclass(frozen=True)
class TensorInfo:
    """A parameter or buffer as registered on its module (no statistics)."""

    name: str
    path: str
    shape: tuple[int, ...]
    dtype: str
    device: str
    numel: int
    nbytes: int
    requires_grad: bool
    is_parameter: bool
    persistent: bool = True
    shared_with: tuple[str, ...] = ()
    has_grad_fn: bool = False
    note: str | None = None

    @property
    def frozen(self) -> bool:
        return self.is_parameter and not self.requires_grad


@dataclass(frozen=True)
class Totals:
    """Counts over a module's whole subtree; a shared parameter counts once."""

    parameters: int = 0
    trainable: int = 0
    buffers: int = 0
    bytes: int = 0

    def to_json(self) -> dict[str, int]:
        return {
            "parameters": self.parameters,
            "trainable": self.trainable,
            "buffers": self.buffers,
            "bytes": self.bytes,
        }


@dataclass(frozen=True)
class ModuleInfo:
    """One module of the tree: its own parameters and buffers, its children's paths."""

    path: str
    name: str
    type_name: str
    training: bool
    parameters: tuple[TensorInfo, ...]
    buffers: tuple[TensorInfo, ...]
    children: tuple[str, ...]
    totals: Totals
    depth: int
    extra_repr: str = ""


@dataclass(frozen=True)
class Unregistered:
    """Something held by a module that `nn.Module` did not register.

    `path` uses Python subscripts for containers (`blocks[0]`, `heads['q']`); `what` is
    "module", "parameter" or "tensor"; `attribute` is the module attribute it hangs from.
    `holds_state` is False for a module with no parameters and no buffers in its subtree: it
    loses nothing in `state_dict()`, `parameters()` or `.to()`, only `train()`/`eval()` and
    hooks attached through `named_modules()`; `mode_dependent` says whether that matters (a
    dropout or batch-norm class, or code that reads `self.training`, in its subtree).
    """

    path: str
    what: str
    type_name: str
    owner: str
    attribute: str
    container: str | None = None
    shape: tuple[int, ...] | None = None
    holds_state: bool = True
    mode_dependent: bool = False

    @property
    def loses_state(self) -> bool:
        """Whether leaving it unregistered loses parameters, buffers or tensors (not only the
        mode and hooks of a stateless module)."""
        return self.what != "module" or self.holds_state


@dataclass(frozen=True)
class Inventory:
    """The whole module tree at one moment, in `named_modules()` order (root first)."""

    modules: tuple[ModuleInfo, ...]
    unregistered: tuple[Unregistered, ...]
    shared: tuple[tuple[str, ...], ...] = ()

    def module(self, path: str) -> ModuleInfo | None:
        for m in self.modules:
            if m.path == path:
                return m
        return None

    @property
    def root(self) -> ModuleInfo:
        return self.modules[0]


@dataclass(frozen=True)
class StateDiff:
    """How the `state_dict` after a step differs from the one before it."""

    changed: tuple[str, ...] = ()
    unchanged: tuple[str, ...] = ()
    added: tuple[str, ...] = ()
    removed: tuple[str, ...] = ()
    max_abs_delta: dict[str, float | None] = field(default_factory=dict)
    rel_change: dict[str, float | None] = field(default_factory=dict)
    """‖new - old‖ / ‖old‖ per changed key; None when the key's shape or dtype changed, or when
    its old value was all zeros (a change from zero has no ratio: shown as "from 0")."""
    counters: tuple[str, ...] = ()
    """The changed keys that hold integer or bool tensors (`num_batches_tracked`)."""
    sampled: tuple[str, ...] = ()
    """Keys whose previous value did not fit the memory budget (`--memory-budget`): whether
    they changed is exact (a digest of their bytes), their `max_abs_delta` and `rel_change`
    are estimates from a fixed sample of their elements."""
    changed_elements: dict[str, int] = field(default_factory=dict)
    """How many elements changed, per changed key compared bit by bit: dtypes without
    arithmetic (`bits8`, `int4`...: their `max_abs_delta` and `rel_change` are None) and
    quantized ones (whose deltas are those of the dequantized values)."""

    def largest_change(self) -> tuple[str, float] | None:
        """The changed floating key with the largest finite max |delta|, or None. Integer
        counters never win: `num_batches_tracked` grows by 1 every step whatever the scale of
        the weights."""
        counters = set(self.counters)
        candidates = [
            (k, v)
            for k, v in self.max_abs_delta.items()
            if k not in counters and v is not None and math.isfinite(v)
        ]
        return max(candidates, key=lambda kv: kv[1], default=None)

    def to_json(self) -> dict[str, Any]:
        return {
            "changed": list(self.changed),
            "added": list(self.added),
            "removed": list(self.removed),
            "max_abs_delta": {k: finite_or_none(v) for k, v in self.max_abs_delta.items()},
            "rel_change": {k: finite_or_none(v) for k, v in self.rel_change.items()},
            **({"sampled": list(self.sampled)} if self.sampled else {}),
            **({"changed_elements": dict(self.changed_elements)} if self.changed_elements else {}),
        }


SummaryList = tuple["TensorSummary | None", ...]


@dataclass(frozen=True)
class HookEvent:
    """One firing of a modscope hook, with summaries of what the hook saw."""

    seq: int
    step: int
    phase: Phase
    module: str
    kind: HookKind
    action: HookAction
    args: SummaryList | None = None
    output: SummaryList | None = None
    grad_input: SummaryList | None = None
    grad_output: SummaryList | None = None
    note: str | None = None
    count: int = 1

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "event": "hook",
            "step": self.step,
            "phase": self.phase.value,
            "module": self.module,
            "kind": self.kind.value,
            "action": self.action.value,
        }
        for name in ("args", "output", "grad_input", "grad_output"):
            value = getattr(self, name)
            if value is not None:
                out[name] = [s.to_json() if s is not None else None for s in value]
        if self.note:
            out["note"] = self.note
        return out


@dataclass(frozen=True)
class UserError:
    """An exception raised by the user's code, located in the user's file (or, with
    `internal`, a failure of modscope's own during an iteration)."""

    message: str
    exc_type: str
    file: str | None
    line: int | None
    phase: Phase
    step: int | None = None
    source_line: str | None = None
    traceback: str = ""
    hint: str | None = None
    internal: bool = False
    """True when modscope itself failed during the iteration (a bug, or a tensor it cannot
    handle), not the user's code: `file` and `line` are None, `traceback` is modscope's."""

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "error",
            "step": self.step,
            "phase": self.phase.value,
            "file": self.file,
            "line": self.line,
            "message": self.message,
            "type": self.exc_type,
            **({"internal": True} if self.internal else {}),
        }

    def describe(self) -> str:
        """One paragraph a person reads: where, what, and what to do."""
        if self.internal:
            when = f"step {self.step}, {self.phase.value}"
            text = f"modscope failed ({when}): {self.exc_type}: {self.message}"
            return f"{text}\n{self.hint}" if self.hint else text
        where = f"{self.file}:{self.line}" if self.file and self.line else (self.file or "?")
        when = self.phase.value if self.step is None else f"step {self.step}, {self.phase.value}"
        text = f"{where}: {self.exc_type}: {self.message} ({when})"
        if self.source_line:
            text += f"\n    {self.source_line.strip()}"
        if self.hint:
            text += f"\n{self.hint}"
        return text


@dataclass(frozen=True)
class StepRecord:
    """What one completed iteration did: loss, output, gradients, state and its diff."""

    step: int
    mode: str
    loss: float | None
    output: TensorSummary | None
    state: dict[str, TensorSummary]
    grads: dict[str, TensorSummary | None]
    diff: StateDiff
    lr: tuple[float, ...] = ()

    def to_json(self) -> dict[str, Any]:
        return {
            "event": "step",
            "step": self.step,
            "mode": self.mode,
            "loss": finite_or_none(self.loss),
            "output": self.output.to_json() if self.output is not None else None,
            "state": {k: v.to_json() for k, v in self.state.items()},
            "grads": {k: (v.to_json() if v is not None else None) for k, v in self.grads.items()},
            "diff": self.diff.to_json(),
        }


@dataclass(frozen=True)
class BreakEvent:
    """A `--break` condition tripped: where, when, and the values that tripped it.

    `module` is the dotted path of the module at fault (`""` the root), or None when the
    condition concerns no one module (the loss, the global gradient norm, the batch, the step);
    `class_name` is its class and `where` the `file:line` of that class's `forward` (None when
    it has no Python source). `inputs` and `outputs` are what the module saw and gave at that
    point: its arguments and output in the forward phase, the gradients w.r.t. them in the
    backward phase (for the loss: the model's output and the loss; for a parameter: its
    gradient and its value). `labels` name what `inputs` and `outputs` hold, in words
    (`("grad_input", "grad_output")`, `("output", "loss")`, ...). `message` says in words what
    tripped.
    """

    step: int
    phase: Phase
    condition: str
    module: str | None
    class_name: str | None
    where: str | None
    inputs: SummaryList = ()
    outputs: SummaryList = ()
    message: str = ""
    labels: tuple[str, str] = ("inputs", "outputs")

    def to_json(self) -> dict[str, Any]:
        """The break line of docs/design.md section 2 (strict JSON)."""
        return {
            "event": "break",
            "step": self.step,
            "phase": self.phase.value,
            "condition": self.condition,
            "module": self.module,
            "class": self.class_name,
            "where": self.where,
            "inputs": [s.to_json() if s is not None else None for s in self.inputs],
            "outputs": [s.to_json() if s is not None else None for s in self.outputs],
            "message": self.message,
        }


@dataclass(frozen=True)
class PhaseResult:
    """What one phase (or whole iteration) produced; `record` is set when an iteration ended."""

    step: int
    phase: Phase
    events: tuple[HookEvent, ...] = ()
    output: TensorSummary | None = None
    loss: float | None = None
    record: StepRecord | None = None
    error: UserError | None = None
    abandoned: bool = False


@dataclass(frozen=True)
class Finding:
    """One pitfall the doctor found (docs/design.md section 4)."""

    kind: FindingKind
    severity: Severity
    path: str
    message: str
    fix: str
    paths: tuple[str, ...] = ()
    step: int | None = None
    subject: str | None = None
    """What the finding is about where its path does not say (`nonfinite`: the loss, the
    output, gradients, parameters or buffers). Two findings are the same one again when their
    kind and subject match, or, without a subject, their kind and path."""

    def to_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {
            "kind": self.kind.value,
            "severity": self.severity.value,
            "path": self.path,
            "message": self.message,
            "fix": self.fix,
        }
        if self.paths:
            out["paths"] = list(self.paths)
        if self.step is not None:
            out["step"] = self.step
        return out


@dataclass(frozen=True)
class HookInfo:
    """One hook that can fire on a module, whoever registered it."""

    hook_id: HookId
    module: str
    kind: str
    owner: str
    qualname: str
    location: str | None
    action: str | None = None
    flags: tuple[str, ...] = ()
    target: str | None = None
