"""The iteration under way: its phases, what they pass along, and the record built after it."""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any, cast

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.breaks import ArmedBreaks
from modscope.core.contract.script_names import MISSING
from modscope.core.contract.steps import Phase, PhaseResult, StepRecord, UserError
from modscope.core.contract.tensors import TensorSummary
from modscope.core.gc_pause import collector_paused
from modscope.core.hooks.event_log import EventLog
from modscope.core.hooks.manager import BreakStop, HookManager, IterationAbandoned
from modscope.core.model.state import state_tensors, wrapper_note
from modscope.core.model.walk import (
    all_parameter_paths,
    refusing_hooks,
    refusing_phrase,
    sealed_note,
)
from modscope.core.script.batches import (
    BatchSource,
    InputsError,
    describe_inputs,
    spread,
    takes_batch,
)
from modscope.core.script.errors import modscope_fault, user_error, user_frame
from modscope.core.script.interrupts import is_real_interrupt
from modscope.core.script.loader import LoadedScript
from modscope.core.script.losses import LossError, check_loss, is_scalar_loss, main_output
from modscope.core.script.print_capture import PrintSink, captured_prints
from modscope.core.script.warning_capture import WarningCapture
from modscope.core.stats.statediff import StateTracker
from modscope.core.stats.summary import capture, capture_many, resolve


class Iteration:
    """A Session's iteration in flight: the phases left to run, the batch, output and loss they
    pass along, the break conditions armed around them, whether one was dropped halfway, and
    the record built after it against the state copied before (the diff's baseline).

    Lives as long as its session (`reset()` clears what one iteration held); the session counts
    the steps and keeps their records.
    """

    def __init__(
        self,
        script: LoadedScript,
        *,
        runner: nn.Module,
        model: nn.Module,
        batches: BatchSource,
        hooks: HookManager,
        log: EventLog,
        tracker: StateTracker,
    ) -> None:
        self.script = script
        self.runner = runner
        self.model = model
        self.batches = batches
        self.hooks = hooks
        self.log = log
        self.tracker = tracker
        # The diff's baseline (a copy of the state) is taken when the first iteration starts,
        # not at load: `tree` and a session never stepped need no copy of the model.
        self.baseline_due = True
        self.breaks: ArmedBreaks | None = None
        """The break conditions armed now (`Session.arm`); None while nothing is armed."""
        self.pending: list[Phase] = []
        self.phase: Phase | None = None
        """The phase running now; None between phases."""
        self.dropped = False
        """An iteration ended halfway since the last complete one (a break, an error)."""
        self.own_loop = False
        """The user's own loop runs the iterations (`core.own_loop`), not these phases."""
        self.batch: Any = None
        self.output: Any = None
        self.loss: torch.Tensor | None = None
        self.output_summary: Any = None
        self.loss_summary: Any = None
        self._root_output: Any = None
        # Without a loss_fn, the first forward tells whether the output is the loss.
        self._output_is_loss: bool | None = None

    @property
    def forward_only(self) -> bool:
        """True when iterations run the forward pass only (no loss to back-propagate)."""
        s = self.script
        if s.train_step is not None or s.compute_loss is not None:
            return False
        return s.loss_fn is None or (s.loss_fn is MISSING and self._output_is_loss is False)

    def phases(self) -> tuple[Phase, ...]:
        """The phases one iteration runs, in order."""
        if self.script.train_step is not None:
            return (Phase.TRAIN_STEP,)
        if self.forward_only:
            return (Phase.FORWARD,)
        if self.script.optimizer is None:
            return (Phase.FORWARD, Phase.BACKWARD)
        return (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)

    @property
    def next_phase(self) -> Phase:
        """The phase `run()` runs next."""
        return self.pending[0] if self.pending else self.phases()[0]

    @property
    def under_way(self) -> bool:
        """True between phases of a partly run iteration."""
        return bool(self.pending)

    @property
    def partial(self) -> bool:
        """True while the model may hold part of an iteration: one under way, or one dropped
        halfway since the last complete one."""
        return self.under_way or self.dropped

    def notes(self) -> list[str]:
        """What a person should know about how iterations run, in words."""
        s = self.script
        notes = list(s.notes)
        if self.own_loop:
            boundary = "optimizer.step()" if s.optimizer is not None else "watch.step(loss)"
            notes.append(
                f"modscope.watch: your own loop runs the iterations; a step is one {boundary}"
            )
        elif s.train_step is not None:
            notes.append("train_step(model) runs whole iterations (no phases)")
        elif s.compute_loss is not None:
            notes.append("forward phase: compute_loss(model, batch)")
        elif s.loss_fn is None:
            notes.append("loss_fn = None: iterations are forward only")
        elif s.loss_fn is MISSING:
            notes.append(
                "no loss_fn: the output is the loss when it is a scalar tensor, else forward only"
            )
        if s.train_step is None and not self.own_loop:
            notes.append(f"inputs: {describe_inputs(s.inputs)}")
            if s.optimizer is None and not self.forward_only:
                notes.append(
                    "no optimizer: backward runs and gradients are reset each iteration; "
                    "parameters do not change"
                )
        refusing = refusing_hooks(self.model)
        if refusing:
            notes.append(
                f"{refusing_phrase(refusing)}: PyTorch refuses hooks on ScriptModules, so hooks "
                "on every module (--hooks all, `*`) skip them"
            )
        sealed = sealed_note(self.model)
        if sealed:
            notes.append(sealed)
        wrapped = wrapper_note(self.runner)
        if wrapped:
            notes.append(wrapped)
        return notes

    # -- running ------------------------------------------------------------------------------

    def begin(self, step: int) -> UserError | None:
        """Start iteration `step`: the baseline copied when due, every phase pending. The error
        when the copy failed (the model's `state_dict()`, or modscope's), before anything ran."""
        failed = self.take_baseline(step)
        if failed is not None:
            return failed
        self.pending = list(self.phases())
        return None

    def take_baseline(self, step: int) -> UserError | None:
        """Copy the state the diff of iteration `step` compares against, when due; the error
        when the copy failed (the model's `state_dict()`, or modscope's)."""
        if self.baseline_due:
            try:
                # Held as for a record: the baseline's copies of a model of many keys
                # otherwise start a full collection.
                with collector_paused():
                    self.tracker.reset(state_tensors(self.model))
            except Exception as exc:
                phase = self.next_phase
                if user_frame(exc.__traceback__) is not None:
                    return self.error(exc, phase, step)
                what = f"modscope could not copy the state before step {step}"
                outcome = f"Nothing of step {step} ran: the model is as it was."
                return modscope_fault(exc, phase=phase, step=step, what=what, outcome=outcome)
            self.baseline_due = False
        return None

    def rebase(self) -> None:
        """The model's state was restored: the next diff compares against it."""
        self.tracker.reset(state_tensors(self.model))
        self.baseline_due = False

    def run(
        self, phase: Phase, *, step: int, sink: PrintSink | None, warnings: WarningCapture
    ) -> PhaseResult | None:
        """Run `phase` of iteration `step` with the script's prints captured, the hooks told,
        the warnings kept and the armed break conditions checked around it. None when it ran;
        the result when it stopped the iteration (an error, a pause abandoned), which is then
        dropped. `BreakStop` and a real Ctrl-C go on up, the iteration dropped."""
        self.phase = phase
        try:
            with (
                captured_prints(sink),
                self.hooks.running_phase(),
                warnings.capturing(),
                self._breaks_around(phase),
            ):
                self._run(phase)
        except BreakStop as stop:
            stop.events = self.log.flush()
            self.drop()
            raise
        except IterationAbandoned:
            events = self.log.flush()
            self.drop()
            return PhaseResult(step, phase, events=events, abandoned=True)
        except BaseException as exc:
            # sys.exit(), KeyboardInterrupt or GeneratorExit from the user's code is a user
            # error like any other; only a real Ctrl-C goes on up (the iteration dropped).
            if is_real_interrupt(exc):
                self.log.drop()
                self.drop()
                raise
            error = self.error(exc, phase, step)
            events = self.log.flush()
            self.drop()
            return PhaseResult(step, phase, events=events, error=error)
        finally:
            self.phase = None
        return None

    def end_phase(self, phase: Phase) -> bool:
        """`phase` ran: drop it from the pending ones. True when the iteration is complete."""
        if phase is Phase.FORWARD and self.loss is None:
            # forward only (no loss to back-propagate): the iteration ends here
            self.pending = [phase]
        self.pending.pop(0)
        return not self.pending

    def results(self) -> tuple[TensorSummary | None, Any]:
        """The output's summary and the loss's of the forward phase (or `train_step`) that ran."""
        output, loss = resolve([self.output_summary, self.loss_summary])
        return output, loss

    def error(self, exc: BaseException, phase: Phase, step: int) -> UserError:
        """The user's error `exc`, raised in `phase` of iteration `step`, located."""
        hint = None
        if isinstance(exc, InputsError | LossError):
            hint = "Fix the script, then reload it."
        return user_error(exc, phase=phase, step=step, script=self.script.path, hint=hint)

    @contextmanager
    def breaks_off(self) -> Iterator[None]:
        """No break condition checked within (a rewind's re-run); those armed are kept."""
        armed, self.breaks = self.breaks, None
        try:
            yield
        finally:
            self.breaks = armed

    def drop(self) -> None:
        """An iteration ended halfway: the model may hold part of it (`partial`)."""
        self.reset()
        self.dropped = True

    def reset(self) -> None:
        """Clear what the iteration held: its pending phases, its batch, output and loss."""
        self.hooks.end_iteration()
        if self.breaks is not None:
            self.breaks.end_iteration()
        self.pending = []
        self.batch = self.output = self.loss = self._root_output = None

    @contextmanager
    def _breaks_around(self, phase: Phase) -> Iterator[None]:
        """The armed break checks before and after `phase` (none while nothing is armed)."""
        armed = self.breaks
        if armed is None:
            yield
            return
        grads = phase is Phase.TRAIN_STEP or (phase is Phase.FORWARD and not self.forward_only)
        armed.before_phase(phase, grads=grads)
        yield
        if self.breaks is armed:  # not disarmed or re-armed at a pause within the phase
            armed.after_phase(phase, output=self.output_summary, loss=self.loss_summary)

    def _run(self, phase: Phase) -> None:
        if phase is Phase.FORWARD:
            self._forward()
        elif phase is Phase.BACKWARD:
            loss = self.loss
            if loss is None:
                return
            try:
                loss.backward()
            finally:
                self.hooks.end_backward()
        elif phase is Phase.OPTIMIZER:
            optimizer = self.script.optimizer
            assert optimizer is not None
            optimizer.step()
            if self.script.scheduler is not None:
                self.script.scheduler.step()
        else:
            with self._root_output_capture():
                loss = self.script.train_step(self.runner)  # type: ignore[misc]
            self.output = self._root_output
            self._capture_results(loss if isinstance(loss, torch.Tensor) else None)

    def _forward(self) -> None:
        s = self.script
        if not self.forward_only:
            if s.optimizer is not None:
                s.optimizer.zero_grad()
            else:
                self.model.zero_grad(set_to_none=True)
        batch = self.batches.next()
        self.batch = batch
        if s.compute_loss is not None:
            with self._root_output_capture():
                loss = s.compute_loss(self.runner, batch)
            self.output = self._root_output
            check_loss(loss, "compute_loss")
        else:
            args, kwargs = spread(batch)
            self.output = output = self.runner(*args, **kwargs)
            loss = self._loss_of(output, batch)
        self.loss = loss
        self._capture_results(loss)

    def _loss_of(self, output: Any, batch: Any) -> torch.Tensor | None:
        fn = self.script.loss_fn
        if fn is None:
            return None
        if fn is MISSING:
            is_loss = is_scalar_loss(output)
            if self._output_is_loss is None:
                self._output_is_loss = is_loss
            return output if is_loss else None
        loss = fn(output, batch) if takes_batch(fn) else fn(output)
        check_loss(loss, "loss_fn")
        return loss

    def _capture_results(self, loss: torch.Tensor | None) -> None:
        output = main_output(self.output)
        self.output_summary = capture(output) if output is not None else None
        self.loss_summary = capture(loss) if loss is not None else None

    @contextmanager
    def _root_output_capture(self) -> Iterator[None]:
        self._root_output = None

        def keep_first(module: nn.Module, args: Any, output: Any) -> None:
            if self._root_output is None:
                self._root_output = output

        handle = self.model.register_forward_hook(keep_first)
        try:
            yield
        finally:
            handle.remove()

    # -- the record ---------------------------------------------------------------------------

    def finish(
        self, step: int, phase: Phase, *, loss: float | None, output: TensorSummary | None
    ) -> StepRecord:
        """The iteration `step` ran whole (`phase` its last): its record, the iteration cleared.
        Raises what the model's `state_dict()` raised, or `RecordFailed` when modscope's own
        work on the record failed: the iteration still counts (its update was applied), with
        no record."""
        try:
            record = self.record(step, loss=loss, output=output)
        except Exception as exc:
            # Either way the diff's copy may be half overwritten (keys are refreshed as they
            # are compared): the next iteration takes a new baseline.
            self.baseline_due = True
            if user_frame(exc.__traceback__) is not None:
                raise  # the user's code raised (a `state_dict` hook, a tensor subclass)
            self.dropped = False
            self.reset()
            error = modscope_fault(
                exc,
                phase=phase,
                step=step,
                what=f"modscope could not record step {step}",
                outcome=f"Step {step} ran and counts: the model holds its update.",
            )
            raise RecordFailed(error) from exc
        self.dropped = False
        self.reset()
        return record

    def record(self, step: int, *, loss: float | None, output: TensorSummary | None) -> StepRecord:
        """The record of iteration `step`: the state, the gradients, the diff against the
        tracker's baseline, the learning rates, with the step's `loss` and `output`."""
        # Held: the copies of a model of many keys otherwise start a full collection.
        with collector_paused():
            return self._build_record(step, loss=loss, output=output)

    def _build_record(
        self, step: int, *, loss: float | None, output: TensorSummary | None
    ) -> StepRecord:
        state = state_tensors(self.model)
        diff = self.tracker.diff(state)
        named = all_parameter_paths(self.model)
        state_items = list(state.items())
        grads = [p.grad if p.grad is not None and not is_lazy(p) else None for _, p in named]
        summaries = resolve(capture_many([v for _, v in state_items] + grads))
        n = len(state_items)
        lr = learning_rates(self.script.optimizer)
        return StepRecord(
            step=step,
            mode="train" if self.model.training else "eval",
            loss=loss,
            output=output,
            # Every state value is a tensor, and `capture_many` leaves None only for what is not.
            state=cast(
                "dict[str, TensorSummary]",
                {k: s for (k, _), s in zip(state_items, summaries[:n], strict=True)},
            ),
            grads={name: s for (name, _), s in zip(named, summaries[n:], strict=True)},
            diff=diff,
            lr=lr,
        )


def learning_rates(optimizer: torch.optim.Optimizer | None) -> tuple[float, ...]:
    """Each parameter group's learning rate, as a step's record carries them (a group whose
    `lr` is no number, a tensor for one, left out)."""
    groups = optimizer.param_groups if optimizer is not None else []
    return tuple(float(g["lr"]) for g in groups if isinstance(g.get("lr"), float | int))


class RecordFailed(Exception):
    """modscope's own work on a step's record failed (`error` says so); the step counts."""

    def __init__(self, error: UserError) -> None:
        super().__init__(error.message)
        self.error = error
