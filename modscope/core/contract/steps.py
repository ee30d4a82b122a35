"""An iteration as frozen data (no torch here): phases, hook events, state diff, errors, breaks."""

from __future__ import annotations

import enum
import math
from dataclasses import dataclass, field
from typing import Any

from modscope.core.contract.hook_spec import HookAction, HookKind
from modscope.core.contract.tensors import SummaryList, TensorSummary, finite_or_none


class Phase(str, enum.Enum):
    """Where in an iteration something happened."""

    LOAD = "load"
    FORWARD = "forward"
    BACKWARD = "backward"
    OPTIMIZER = "optimizer"
    TRAIN_STEP = "train_step"


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
    skipped: bool = False
    """The optimizer step did not run (a GradScaler found inf/NaN gradients: `modscope.watch`);
    the diff shows what the forward and backward passes changed (running statistics)."""

    def to_json(self) -> dict[str, Any]:
        line = {
            "event": "step",
            "step": self.step,
            "mode": self.mode,
            "loss": finite_or_none(self.loss),
            "output": self.output.to_json() if self.output is not None else None,
            "state": {k: v.to_json() for k, v in self.state.items()},
            "grads": {k: (v.to_json() if v is not None else None) for k, v in self.grads.items()},
            "diff": self.diff.to_json(),
        }
        if self.skipped:
            line["skipped"] = True
        return line


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


class BreakError(Exception):
    """A break condition tripped in a watched loop (`modscope.watch()`): `event` says where,
    the message is the break as `modscope run` prints it."""

    def __init__(self, event: BreakEvent, text: str) -> None:
        super().__init__(text)
        self.event = event
