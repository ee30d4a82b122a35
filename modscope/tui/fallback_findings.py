"""Findings the app can tell from snapshots alone, used when the doctor is not installed."""

from __future__ import annotations

import math

from modscope.core.types import Finding, Inventory, Severity, StepRecord

_UNREGISTERED = {
    "module": (
        "unregistered-module",
        Severity.ERROR,
        "use nn.ModuleList / nn.ModuleDict (or add_module) instead of a plain {container}",
    ),
    "parameter": (
        "unregistered-parameter",
        Severity.ERROR,
        "use nn.ParameterList / nn.ParameterDict (or register_parameter)",
    ),
    "tensor": (
        "unregistered-tensor",
        Severity.WARNING,
        "register_buffer() it (persistent=False if it is not state), or make it a Parameter",
    ),
}


def fallback_findings(inv: Inventory) -> list[Finding]:
    """Unregistered modules, parameters and tensors, and shared parameters, from an inventory."""
    found = []
    for u in inv.unregistered:
        kind, severity, fix = _UNREGISTERED.get(u.what, _UNREGISTERED["tensor"])
        where = f"in a plain {u.container}" if u.container else "a plain attribute"
        found.append(
            Finding(
                kind=kind,
                severity=severity,
                path=u.path,
                message=f"{u.type_name} {u.path} is not registered ({where}): not in parameters(), "
                "state_dict() or .to()",
                fix=fix.format(container=u.container or "attribute"),
            )
        )
    for paths in inv.shared:
        found.append(
            Finding(
                kind="shared-parameter",
                severity=Severity.INFO,
                path=paths[0],
                message=f"one Parameter under {len(paths)} names: {', '.join(paths)}",
                fix="intended for weight tying; otherwise give each module its own Parameter",
                paths=tuple(paths),
            )
        )
    return found


NONFINITE_LIMIT = 20
"""At most this many non-finite state entries become findings (all of them may be NaN)."""


def step_findings(record: StepRecord) -> list[Finding]:
    """A non-finite loss or state after a step (the doctor names the first module too)."""
    found = []
    if record.loss is not None and not math.isfinite(record.loss):
        found.append(
            Finding(
                kind="nonfinite",
                severity=Severity.ERROR,
                path="",
                message=f"the loss is {record.loss} at step {record.step}",
                fix="look for log/sqrt/division of non-positive values and for a too large "
                "learning rate",
                step=record.step,
            )
        )
    bad = [(k, s) for k, s in record.state.items() if s.nan or s.inf]
    for key, summary in bad[:NONFINITE_LIMIT]:
        found.append(
            Finding(
                kind="nonfinite",
                severity=Severity.ERROR,
                path=key,
                message=f"{key} holds {summary.nan} NaN and {summary.inf} Inf values after step "
                f"{record.step}",
                fix="find the first non-finite gradient or output before this step",
                step=record.step,
            )
        )
    return found
