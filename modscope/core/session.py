"""The Session facade: one model under inspection, stepped by phase, with hooks and history.

Past 450 lines by intent: it is the one facade the controller, the reports and the doctor
drive, so its public surface (stepping, hooks, breaks, rewind, saving) stays in one place; the
work behind each part lives in its own module (losses, event_log, model_state, breaks,
checkpoints, outputs), and rewind and "what if" in the `session_time_travel` mixin.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable, Iterator
from contextlib import contextmanager
from typing import Any

import torch
from torch import nn
from torch.nn.parameter import is_lazy

from modscope.core.batches import BatchSource, InputsError, describe_inputs, spread, takes_batch
from modscope.core.bounded import append_bounded
from modscope.core.break_spec import BreakCondition
from modscope.core.breaks import BreakWatch, loss_source
from modscope.core.checkpoints import Checkpoints
from modscope.core.errors import ScriptError, modscope_fault, user_error, user_frame
from modscope.core.event_log import EventLog
from modscope.core.gc_pause import collector_paused
from modscope.core.hook_spec import HookId, HookSpec
from modscope.core.hooks import (
    AttachedHook,
    BreakStop,
    EventDraft,
    HookManager,
    IterationAbandoned,
)
from modscope.core.interrupts import is_real_interrupt
from modscope.core.inventory import build_inventory
from modscope.core.loader import LoadedScript, load_script
from modscope.core.losses import LossError, check_loss, is_scalar_loss, loss_value, main_output
from modscope.core.memory_budget import copy_budget, history_limit, resolve_budget
from modscope.core.model_state import (
    initial_state,
    inspected_module,
    state_tensors,
    wrapper_note,
)
from modscope.core.outputs import atomic_write, check_writable
from modscope.core.print_capture import PrintSink, captured_prints
from modscope.core.script_names import MISSING
from modscope.core.session_time_travel import TimeTravel
from modscope.core.statediff import StateTracker
from modscope.core.summary import capture, capture_many, resolve
from modscope.core.timelines import Timeline
from modscope.core.types import (
    BreakEvent,
    HookEvent,
    Inventory,
    Phase,
    PhaseResult,
    StepRecord,
    TensorSummary,
    UserError,
)
from modscope.core.walk import all_parameter_paths, refusing_hooks, refusing_phrase, sealed_note
from modscope.core.warning_capture import WarningCapture

EVENT_LIMIT = 5000
HISTORY_LIMIT = 1000


class Session(TimeTravel):
    """A loaded model script: steps its training one phase or one iteration at a time.

    Used from one thread at a time (the app's worker). Every result is a frozen snapshot; live
    tensors never leave the session.

    Rewind (docs/time_travel.md, "Rewind from Python"), with `rewind=True` (the app's sessions;
    off by default, so the headless commands and the doctor pay nothing for it): before each
    iteration the session keeps a checkpoint of the training state (`core.checkpoints`),
    within `rewind_budget` bytes (default: 1 GiB or 25% of available memory, whichever is
    smaller), older ones thinned.
    `rewind(step)` goes back to the state after `step` iterations, and re-running from there
    is bit-identical to the first time; `reachable_steps()` lists the steps kept whole;
    `rewind_note()` says why rewind is off.

    `memory_budget` (bytes, a share of the available memory as a float, or None: 25% of it)
    bounds the previous-state copy the diff needs and the step history (`core.memory_budget`):
    keys whose copy does not fit are kept as digests and samples (`StateDiff.sampled`).
    """

    def __init__(
        self,
        script: LoadedScript,
        *,
        sink: PrintSink | None = None,
        pause: Callable[[EventDraft], None] | None = None,
        on_break: Callable[[BreakEvent], None] | None = None,
        rewind: bool = False,
        rewind_budget: int | float | None = None,
        memory_budget: int | float | None = None,
    ) -> None:
        self.script = script
        self.memory_budget = resolve_budget(memory_budget)
        """Bytes the previous-state copy and the history may take (`core.memory_budget`)."""
        self.on_break = on_break
        """Called where an armed break condition trips (see `arm`); None raises `BreakStop`."""
        self._breaks: BreakWatch | None = None
        # The iterations call the script's model as given (`runner`: a DistributedDataParallel
        # wrapper keeps averaging gradients); everything else reads the model inside (`model`).
        self.runner: nn.Module = script.model
        self.model: nn.Module = inspected_module(script.model)
        self.sink = sink
        self.batches = BatchSource(script.inputs)
        self.step = 0
        self._log = EventLog(EVENT_LIMIT)
        self.events = self._log.events
        self.history: deque[StepRecord] = deque(maxlen=HISTORY_LIMIT)
        self.hooks = HookManager(self.model, emit=self._log.add, context=self._context, pause=pause)
        self.last_output: TensorSummary | None = None
        self.last_loss: float | None = None
        self._phase: Phase | None = None
        self._pending_phases: list[Phase] = []
        self._batch: Any = None
        self._output: Any = None
        self._loss: torch.Tensor | None = None
        self._output_summary: Any = None
        self._loss_summary: Any = None
        self._root_output: Any = None
        # Without a loss_fn, the first forward tells whether the output is the loss.
        self._output_is_loss: bool | None = None
        self._dropped = False
        self.shown_warnings = WarningCapture()
        """The warnings PyTorch showed during the iterations, for the doctor (`take()`)."""
        self.requested_training: bool | None = None
        """The mode a person asked for through modscope (`run --eval`, the app's train/eval
        key); None while the model is in the mode the script left it in."""
        self._tracker = StateTracker(copy_budget(self.memory_budget))
        initial_state(self.model, script.path)  # a state that cannot be read fails the load
        # The diff's baseline (a copy of the state) is taken when the first iteration starts,
        # not here: `tree` and a session never stepped need no copy of the model.
        self._baseline_due = True
        self.original: Timeline | None = None
        """The timeline the first rewind went back over, to compare re-runs against
        (`compare_timelines`); None before any rewind that left steps behind."""
        self._checkpoints = (
            Checkpoints(
                self.model,
                optimizer=script.optimizer,
                scheduler=script.scheduler,
                batches=self.batches,
                budget=rewind_budget,
                generators=script.generators(),
            )
            if rewind
            else None
        )

    @classmethod
    def load(
        cls,
        path: str,
        *,
        model_name: str | None = None,
        sink: PrintSink | None = None,
        pause: Callable[[EventDraft], None] | None = None,
        rewind: bool = False,
        rewind_budget: int | float | None = None,
        memory_budget: int | float | None = None,
    ) -> Session:
        """Load a model script (raises `ScriptError` naming the file and line, also when the
        model's state cannot be read: a module cycle, a `state_dict()` that raises)."""
        try:
            script = load_script(path, model_name=model_name, sink=sink)
        except ScriptError:
            raise
        except Exception as exc:  # the model's own methods, called while reading the contract
            raise ScriptError(user_error(exc, phase=Phase.LOAD, script=path)) from exc
        return cls(
            script,
            sink=sink,
            pause=pause,
            rewind=rewind,
            rewind_budget=rewind_budget,
            memory_budget=memory_budget,
        )

    @classmethod
    def from_objects(
        cls,
        model: nn.Module,
        *,
        inputs: Any = MISSING,
        loss_fn: Any = MISSING,
        optimizer: torch.optim.Optimizer | None = None,
        scheduler: Any = None,
        compute_loss: Callable[..., Any] | None = None,
        train_step: Callable[..., Any] | None = None,
        origin: str = "<inspect>",
        sink: PrintSink | None = None,
        pause: Callable[[EventDraft], None] | None = None,
        rewind: bool = False,
        rewind_budget: int | float | None = None,
        memory_budget: int | float | None = None,
    ) -> Session:
        """A session on live objects (`modscope.inspect()`), with the script contract's names."""
        if not isinstance(model, nn.Module):
            raise TypeError(f"model is a {type(model).__name__}, not an nn.Module")
        script = LoadedScript(
            path=origin,
            module=None,
            model=model,
            model_name="model",
            inputs=inputs,
            loss_fn=loss_fn,
            compute_loss=compute_loss,
            optimizer=optimizer,
            scheduler=scheduler,
            train_step=train_step,
        )
        return cls(
            script,
            sink=sink,
            pause=pause,
            rewind=rewind,
            rewind_budget=rewind_budget,
            memory_budget=memory_budget,
        )

    # -- what the script defines --------------------------------------------------------------

    @property
    def optimizer(self) -> torch.optim.Optimizer | None:
        return self.script.optimizer

    @property
    def training(self) -> bool:
        return self.model.training

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
        if self.optimizer is None:
            return (Phase.FORWARD, Phase.BACKWARD)
        return (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)

    @property
    def next_phase(self) -> Phase:
        """The phase `run_phase()` runs next."""
        return self._pending_phases[0] if self._pending_phases else self.phases()[0]

    @property
    def in_iteration(self) -> bool:
        """True between phases of a partly run iteration."""
        return bool(self._pending_phases)

    @property
    def partial(self) -> bool:
        """True while the model may hold part of an iteration: one under way (`in_iteration`),
        or one dropped halfway (a break, an error, a pause abandoned) since the last complete
        one. `rewind(step)` then restores even the step it stands at."""
        return self.in_iteration or self._dropped

    def notes(self) -> list[str]:
        """What a person should know about how iterations run, in words."""
        s = self.script
        notes = list(s.notes)
        if s.train_step is not None:
            notes.append("train_step(model) runs whole iterations (no phases)")
        elif s.compute_loss is not None:
            notes.append("forward phase: compute_loss(model, batch)")
        elif s.loss_fn is None:
            notes.append("loss_fn = None: iterations are forward only")
        elif s.loss_fn is MISSING:
            notes.append(
                "no loss_fn: the output is the loss when it is a scalar tensor, else forward only"
            )
        if s.train_step is None:
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

    # -- inspection ---------------------------------------------------------------------------

    def inventory(self) -> Inventory:
        """The module tree as it is now."""
        return build_inventory(self.model)

    def attach(self, spec: HookSpec) -> list[AttachedHook]:
        """Attach a modscope hook (raises `HookSpecError` for a bad spec or module)."""
        return self.hooks.attach(spec)

    def detach(self, hook_id: HookId) -> None:
        """Detach a modscope hook, restoring the module exactly."""
        self.hooks.detach(hook_id)

    def set_training(self, training: bool) -> None:
        """Switch the whole model to train or eval mode (`model.train(training)`)."""
        self.requested_training = training
        self.runner.train(training)

    def close(self) -> None:
        """Remove every hook modscope added and drop the partial iteration."""
        self._reset_iteration()
        self.hooks.detach_all()
        self.disarm()

    # -- break conditions ---------------------------------------------------------------------

    @property
    def armed(self) -> tuple[BreakCondition, ...]:
        """The break conditions armed now (none: nothing is attached for them)."""
        return self._breaks.conditions if self._breaks is not None else ()

    def arm(self, conditions: Iterable[BreakCondition | str]) -> tuple[BreakCondition, ...]:
        """Arm these break conditions (`--break` texts or parsed), replacing those armed.

        From the next phase on, a condition that trips calls `on_break(event)` where it
        tripped: inside the module's hook for `nan` at a module and `MODULE:output-absmax>X`;
        right before the phase for `step=N` and a non-finite batch; right after the phase for
        the loss, the gradient norms and the optimizer step. `on_break` returns to let the
        iteration go on, or raises `IterationAbandoned` to drop it (a `PhaseResult` with
        `abandoned`); without `on_break`, `BreakStop` leaves `run_phase()`/`run_iteration()`
        after the partial iteration is dropped. Either way nothing is restored: the model is
        as the phase left it when it stopped (a forward stopped halfway has updated the
        running statistics of the modules that ran; a backward some `.grad`s; after the
        optimizer step the parameters are updated), and `step` does not count the iteration.
        Each condition trips at most once per iteration. Raises `BreakSpecError` for a
        condition that does not parse or names no module; `arm(())` disarms.
        """
        parsed = [
            c if isinstance(c, BreakCondition) else BreakCondition.parse(c) for c in conditions
        ]
        watch = None
        if parsed:
            watch = BreakWatch(
                self.model,
                parsed,
                trip=self._break_tripped,
                context=self._context,
                loss_fn=loss_source(self.script),
            )
        self.disarm()
        self._breaks = watch
        return self.armed

    def disarm(self) -> None:
        """Disarm every break condition: their hooks are removed, nothing is watched."""
        watch, self._breaks = self._breaks, None
        if watch is not None:
            watch.close()

    def _break_tripped(self, event: BreakEvent) -> None:
        if self.on_break is None:
            raise BreakStop(event)
        self.on_break(event)

    @contextmanager
    def _breaks_around(self, phase: Phase) -> Iterator[None]:
        """The armed break checks before and after `phase` (none while nothing is armed)."""
        watch = self._breaks
        if watch is None:
            yield
            return
        grads = phase is Phase.TRAIN_STEP or (phase is Phase.FORWARD and not self.forward_only)
        watch.before_phase(phase, grads=grads)
        yield
        if self._breaks is watch:  # not disarmed or re-armed at a pause within the phase
            watch.after_phase(phase, output=self._output_summary, loss=self._loss_summary)

    # -- stepping -----------------------------------------------------------------------------

    def run_phase(self) -> PhaseResult:
        """Run the next phase only: forward (with the loss), backward, or the optimizer step."""
        if not self._pending_phases:
            if self._baseline_due:
                failed = self._take_baseline()
                if failed is not None:
                    return PhaseResult(self.step + 1, self.next_phase, error=failed)
            self._pending_phases = list(self.phases())
            if self._checkpoints is not None:
                self._checkpoints.take(self.step)
        phase = self._pending_phases[0]
        self._phase = phase
        try:
            with (
                captured_prints(self.sink),
                self.hooks.running_phase(),
                self.shown_warnings.capturing(),
                self._breaks_around(phase),
            ):
                self._run(phase)
        except BreakStop as stop:
            stop.events = self._log.flush()
            self._drop_iteration()
            raise
        except IterationAbandoned:
            events = self._log.flush()
            self._drop_iteration()
            return PhaseResult(self.step + 1, phase, events=events, abandoned=True)
        except BaseException as exc:
            # sys.exit(), KeyboardInterrupt or GeneratorExit from the user's code is a user
            # error like any other; only a real Ctrl-C goes on up (the iteration dropped).
            if is_real_interrupt(exc):
                self._log.drop()
                self._drop_iteration()
                raise
            error = self._error(exc, phase)
            events = self._log.flush()
            self._drop_iteration()
            return PhaseResult(self.step + 1, phase, events=events, error=error)
        finally:
            self._phase = None
        if phase is Phase.FORWARD and self._loss is None:
            # forward only (no loss to back-propagate): the iteration ends here
            self._pending_phases = [phase]
        self._pending_phases.pop(0)
        events = self._log.flush()
        if phase in (Phase.FORWARD, Phase.TRAIN_STEP):
            output, loss = resolve([self._output_summary, self._loss_summary])
            self.last_output = output
            self.last_loss = loss_value(loss)
        record = None
        if not self._pending_phases:
            try:
                record = self._finish_iteration()
            except _RecordFailed as failed:  # counted: the step ran, its record did not
                return PhaseResult(
                    self.step,
                    phase,
                    events=events,
                    output=self.last_output,
                    loss=self.last_loss,
                    error=modscope_fault(
                        failed.cause,
                        phase=phase,
                        step=self.step,
                        what=f"modscope could not record step {self.step}",
                        outcome=f"Step {self.step} ran and counts: the model holds its update.",
                    ),
                )
            except Exception as exc:  # the model's state_dict() raised after the iteration
                self._drop_iteration()
                return PhaseResult(
                    self.step + 1, phase, events=events, error=self._error(exc, phase)
                )
        return PhaseResult(
            record.step if record else self.step + 1,
            phase,
            events=events,
            output=self.last_output,
            loss=self.last_loss,
            record=record,
        )

    def run_iteration(self) -> PhaseResult:
        """Run one whole iteration, or finish the one a `run_phase()` started."""
        events: list[HookEvent] = []
        while True:
            try:
                result = self.run_phase()
            except BreakStop as stop:
                stop.events = (*events, *stop.events)
                raise
            events.extend(result.events)
            if result.record or result.error or result.abandoned:
                return PhaseResult(
                    result.step,
                    result.phase,
                    events=tuple(events),
                    output=result.output,
                    loss=result.loss,
                    record=result.record,
                    error=result.error,
                    abandoned=result.abandoned,
                )

    def _run(self, phase: Phase) -> None:
        if phase is Phase.FORWARD:
            self._forward()
        elif phase is Phase.BACKWARD:
            loss = self._loss
            if loss is None:
                return
            try:
                loss.backward()
            finally:
                self.hooks.end_backward()
        elif phase is Phase.OPTIMIZER:
            assert self.optimizer is not None
            self.optimizer.step()
            if self.script.scheduler is not None:
                self.script.scheduler.step()
        else:
            with self._root_output_capture():
                loss = self.script.train_step(self.runner)  # type: ignore[misc]
            self._output = self._root_output
            self._capture_results(loss if isinstance(loss, torch.Tensor) else None)

    def _forward(self) -> None:
        s = self.script
        trains = not self.forward_only
        if trains:
            if self.optimizer is not None:
                self.optimizer.zero_grad()
            else:
                self.model.zero_grad(set_to_none=True)
        batch = self.batches.next()
        self._batch = batch
        if s.compute_loss is not None:
            with self._root_output_capture():
                loss = s.compute_loss(self.runner, batch)
            self._output = self._root_output
            check_loss(loss, "compute_loss")
        else:
            args, kwargs = spread(batch)
            self._output = output = self.runner(*args, **kwargs)
            loss = self._loss_of(output, batch)
        self._loss = loss
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
        output = main_output(self._output)
        self._output_summary = capture(output) if output is not None else None
        self._loss_summary = capture(loss) if loss is not None else None

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

    def _drop_iteration(self) -> None:
        """An iteration ended halfway: the model may hold part of it (`partial`)."""
        self._reset_iteration()
        self._dropped = True

    def _take_baseline(self) -> UserError | None:
        """Copy the state the next diff compares against; the error when that failed (the
        model's `state_dict()`, or modscope's copy), before anything of the iteration ran."""
        try:
            # Held as for a record: the baseline's copies of a 13,200-key model otherwise
            # start a full collection (0.23-0.33 -> 0.11 s).
            with collector_paused():
                self._tracker.reset(state_tensors(self.model))
        except Exception as exc:
            phase = self.next_phase
            if user_frame(exc.__traceback__) is not None:
                return self._error(exc, phase)
            what = f"modscope could not copy the state before step {self.step + 1}"
            outcome = f"Nothing of step {self.step + 1} ran: the model is as it was."
            return modscope_fault(exc, phase=phase, step=self.step + 1, what=what, outcome=outcome)
        self._baseline_due = False
        return None

    def _finish_iteration(self) -> StepRecord:
        """Count the iteration that ran and keep its record. Raises what the model's
        `state_dict()` raised, or `_RecordFailed` when modscope's own work on the record
        failed: the iteration still counts (its update was applied), with no record."""
        try:
            record = self._record(self.step + 1)
        except Exception as exc:
            if user_frame(exc.__traceback__) is not None:
                raise  # the user's code raised (a `state_dict` hook, a tensor subclass)
            self.step += 1
            self._dropped = False
            self._baseline_due = True  # the diff's copy may be half overwritten
            self._reset_iteration()
            raise _RecordFailed(exc) from exc
        self.step += 1
        self._dropped = False
        limit = history_limit(self.memory_budget, record, HISTORY_LIMIT)
        self.history = append_bounded(self.history, record, limit)
        self._reset_iteration()
        return record

    def _record(self, step: int | None = None) -> StepRecord:
        """The record of the iteration `step` (the last one counted, by default)."""
        with collector_paused():
            return self._build_record(self.step if step is None else step)

    def _build_record(self, step: int) -> StepRecord:
        state = state_tensors(self.model)
        diff = self._tracker.diff(state)
        named = all_parameter_paths(self.model)
        state_items = list(state.items())
        grads = [p.grad if p.grad is not None and not is_lazy(p) else None for _, p in named]
        summaries = resolve(capture_many([v for _, v in state_items] + grads))
        n = len(state_items)
        lr = tuple(
            float(g["lr"])
            for g in (self.optimizer.param_groups if self.optimizer else [])
            if isinstance(g.get("lr"), float | int)
        )
        return StepRecord(
            step=step,
            mode="train" if self.model.training else "eval",
            loss=self.last_loss,
            output=self.last_output,
            state={k: s for (k, _), s in zip(state_items, summaries[:n], strict=True)},
            grads={name: s for (name, _), s in zip(named, summaries[n:], strict=True)},
            diff=diff,
            lr=lr,
        )

    def _reset_iteration(self) -> None:
        self.hooks.end_iteration()
        if self._breaks is not None:
            self._breaks.end_iteration()
        self._pending_phases = []
        self._batch = self._output = self._loss = self._root_output = None

    def _error(self, exc: BaseException, phase: Phase) -> UserError:
        hint = None
        if isinstance(exc, InputsError | LossError):
            hint = "Fix the script, then reload it."
        return user_error(exc, phase=phase, step=self.step + 1, script=self.script.path, hint=hint)

    def _context(self) -> tuple[int, Phase]:
        """What a hook firing now belongs to: the step and phase running."""
        return self.step + 1, self._phase or Phase.FORWARD

    # -- saving -------------------------------------------------------------------------------

    def save_state(self, path: str) -> None:
        """Write the `state_dict` of the script's own model object with `torch.save`, atomically
        (`core.outputs.atomic_write`): its keys are the plain loop's `model.state_dict()`, with
        `module.` when the script's model is a (Distributed)DataParallel wrapper.

        Raises `OutputError` when `path` cannot be written (a full disk said as such); a file
        already there keeps its mode.
        """
        check_writable(path)
        namespace = vars(self.script.module) if self.script.module is not None else {}
        own = namespace.get(self.script.model_name)
        state = (own if isinstance(own, nn.Module) else self.runner).state_dict()
        size = sum(t.nelement() * t.element_size() for t in state.values() if torch.is_tensor(t))
        atomic_write(path, lambda f: torch.save(state, f), size=size)


class _RecordFailed(Exception):
    """modscope's own work on a step's record failed (`cause`); the step was counted."""

    def __init__(self, cause: Exception) -> None:
        super().__init__(type(cause).__name__)
        self.cause = cause
