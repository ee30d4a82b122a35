"""The doctor's findings as frozen data (no torch here): kinds, severities, a finding."""

from __future__ import annotations

import enum
from dataclasses import dataclass
from typing import Any


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
