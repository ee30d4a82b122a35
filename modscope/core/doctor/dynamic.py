"""`modscope check`'s engine: the static rules, then iterations and probes in a sandbox."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from modscope.core.doctor import rules
from modscope.core.doctor.probes import ForwardProbe, eval_nondeterminism
from modscope.core.doctor.sandbox import MEMORY_FRACTION, Sandbox, SandboxMode
from modscope.core.doctor.watch import StepWatcher
from modscope.core.errors import user_error
from modscope.core.session import Session
from modscope.core.types import Finding, Phase, UserError

_MODE_NOTES = {
    SandboxMode.COPY: "dynamic checks ran on a copy of the model and optimizer",
    SandboxMode.RESTORE: "dynamic checks ran on the model itself, restored afterwards",
    SandboxMode.RESTORE_NO_STEP: "dynamic checks ran on the model itself, restored afterwards",
}


@dataclass(frozen=True)
class CheckResult:
    """What `run_checks` found: findings worst first, and how far the iterations got."""

    findings: tuple[Finding, ...]
    steps_run: int
    error: UserError | None = None
    notes: tuple[str, ...] = ()
    where: str | None = None
    """How the dynamic checks ran, in words (on a copy, or on the model, restored)."""

    @property
    def has_errors(self) -> bool:
        return any(f.severity.rank == 0 for f in self.findings)


def run_checks(
    session: Session, *, steps: int = 1, fraction: float = MEMORY_FRACTION
) -> CheckResult:
    """Every doctor rule on a session's model: static ones, then `steps` iterations and an
    eval-mode probe in a `Sandbox` that leaves the model, optimizer, scheduler, RNG states and
    train/eval flags as they were.

    Call between iterations (not after a partial `run_phase()`), with modscope's own hooks
    attached or not (the sandbox leaves them out). An iteration that raises stops the
    iterations: `error` says where, and the findings so far are kept.
    """
    watcher = StepWatcher(session)
    static = [_unstamped(f) for f in watcher.initial()]
    notes: list[str] = []
    script = session.script
    if script.train_step is None and not session.batches.defined:
        notes.append("no `inputs` in the script: only the static checks ran")
        return CheckResult(_worst_first(static), 0, notes=tuple(notes))
    found: list[Finding] = []
    error: UserError | None = None
    steps_run = 0
    sandbox = Sandbox(session, fraction=fraction)
    with warnings.catch_warnings():
        # Reported as legacy-backward-hook already; PyTorch would repeat it at every forward.
        warnings.filterwarnings(
            "ignore", message="Using a non-full backward hook", category=FutureWarning
        )
        with sandbox as box:
            runner = StepWatcher(box, reported=static)
            probe = ForwardProbe(box.model)
            probe.attach()
            try:
                for step in range(1, (steps if sandbox.steps_allowed else 0) + 1):
                    probe.begin_step(step)
                    result = box.run_iteration()
                    if result.error is not None or result.record is None:
                        error = result.error
                        break
                    steps_run += 1
                    found += runner.after_step(
                        result.record, nonfinite_module=probe.take_nonfinite()
                    )
            finally:
                probe.detach()
            found += probe.reused_findings()
            if error is None:
                try:
                    culprit = eval_nondeterminism(box.model, box.script)
                except Exception as exc:
                    where = user_error(exc, phase=Phase.FORWARD, script=script.path)
                    notes.append(
                        "the eval-mode check could not run: "
                        f"{where.exc_type}: {where.message}"
                        + (f" ({where.file}:{where.line})" if where.file and where.line else "")
                    )
                else:
                    if culprit is not None:
                        found.append(rules.eval_nondeterministic(*culprit))
    notes += sandbox.notes
    where = _MODE_NOTES[sandbox.mode] if sandbox.mode is not None else None
    return CheckResult(_worst_first(static + found), steps_run, error, tuple(notes), where)


def _worst_first(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: f.severity.rank))


def _unstamped(f: Finding) -> Finding:
    return replace(f, step=None)
