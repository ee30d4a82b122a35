"""`modscope check`'s engine: the static rules, then iterations and probes in a sandbox."""

from __future__ import annotations

import warnings
from dataclasses import dataclass, replace

from modscope.core.contract.findings import Finding
from modscope.core.contract.steps import Phase, UserError
from modscope.core.doctor import rules
from modscope.core.doctor.after_step import AfterStepRules
from modscope.core.doctor.layers import LayerHealth
from modscope.core.doctor.probes import ForwardProbe, eval_nondeterminism
from modscope.core.doctor.sandbox import MEMORY_FRACTION, Sandbox, SandboxMode
from modscope.core.layers.collector import LayerCollector
from modscope.core.model.walk import refusing_hooks, refusing_phrase
from modscope.core.script.errors import user_error
from modscope.core.script.interrupts import is_real_interrupt
from modscope.core.script.print_capture import captured_prints
from modscope.core.session import Session

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
    iterations: `error` says where, and the findings so far are kept. When the copy turns out
    to run the original's code (a closure over its submodules), its results are dropped and
    everything runs again on the model itself, restored afterwards.
    """
    rules = AfterStepRules(session)
    static = [_unstamped(f) for f in rules.initial()]
    notes: list[str] = []
    script = session.script
    skipped = refusing_hooks(session.model)
    if skipped:
        notes.append(
            f"{refusing_phrase(skipped)} left out of the per-module checks (reused-module, the "
            "first non-finite module, eval-mode randomness): PyTorch refuses hooks on ScriptModules"
        )
    if script.train_step is None and not session.batches.defined:
        notes.append("no `inputs` in the script: only the static checks ran")
        return CheckResult(_worst_first(static), 0, notes=tuple(notes))
    attempt = _Attempt(session, static, steps, Sandbox(session, fraction=fraction))
    if attempt.run():
        notes += attempt.sandbox.notes  # why the copy was dropped
        attempt = _Attempt(session, static, steps, Sandbox(session, fraction=fraction, copy=False))
        attempt.run()
    sandbox = attempt.sandbox
    where = _MODE_NOTES[sandbox.mode] if sandbox.mode is not None else None
    return CheckResult(
        _worst_first(static + attempt.found),
        attempt.steps_run,
        attempt.error,
        tuple(notes + attempt.notes + sandbox.notes),
        where,
    )


class _Attempt:
    """The dynamic part of `run_checks` in one sandbox: iterations, then the eval-mode probe."""

    def __init__(
        self, session: Session, static: list[Finding], steps: int, sandbox: Sandbox
    ) -> None:
        self.session = session
        self.static = static
        self.steps = steps
        self.sandbox = sandbox
        self.found: list[Finding] = []
        self.notes: list[str] = []
        self.error: UserError | None = None
        self.steps_run = 0

    def run(self) -> bool:
        """Run the checks; True when the sandbox's copy was found to run the original's code
        (the results are then not the model's: run again without a copy)."""
        sandbox = self.sandbox
        with warnings.catch_warnings():
            # Reported as legacy-backward-hook already; PyTorch would repeat it at every forward.
            warnings.filterwarnings(
                "ignore", message="Using a non-full backward hook", category=FutureWarning
            )
            with sandbox as box:
                if sandbox.shares_code():
                    return True
                self._iterate(box)
                if sandbox.shares_code():
                    return True
                if self.error is None:
                    self._probe_eval(box)
                if sandbox.shares_code():
                    return True
        return False

    def _iterate(self, box: Session) -> None:
        runner = AfterStepRules(box, reported=self.static)
        probe = ForwardProbe(box.model)
        probe.attach()
        layers = LayerCollector(box.model)
        health = LayerHealth()
        layers.attach()
        try:
            for step in range(1, (self.steps if self.sandbox.steps_allowed else 0) + 1):
                probe.begin_step(step)
                result = box.run_iteration()
                if self.sandbox.shares_code():
                    return
                if result.error is not None or result.record is None:
                    self.error = result.error
                    return
                self.steps_run += 1
                self.found += runner.after_step(
                    result.record, nonfinite_module=probe.take_nonfinite()
                )
                health.observe(layers.take(result.record))
        finally:
            layers.detach()
            probe.detach()
            self.found += probe.reused_findings()
            self.found += health.findings()

    def _probe_eval(self, box: Session) -> None:
        try:
            with captured_prints(box.sink):  # user code, as in an iteration: prints, os._exit
                culprit = eval_nondeterminism(box.model, box.script)
        except BaseException as exc:
            # sys.exit() or a KeyboardInterrupt of the script's own, in eval mode, is a note like
            # any other exception; the findings so far are kept. A real Ctrl-C goes on up.
            if is_real_interrupt(exc):
                raise
            where = user_error(exc, phase=Phase.FORWARD, script=self.session.script.path)
            self.notes.append(
                "the eval-mode check could not run: "
                f"{where.exc_type}: {where.message}"
                + (f" ({where.file}:{where.line})" if where.file and where.line else "")
            )
        else:
            if culprit is not None:
                self.found.append(rules.eval_nondeterministic(*culprit))


def _worst_first(findings: list[Finding]) -> tuple[Finding, ...]:
    return tuple(sorted(findings, key=lambda f: f.severity.rank))


def _unstamped(f: Finding) -> Finding:
    return replace(f, step=None)
