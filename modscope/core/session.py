"""The Session facade: one model under inspection, stepped by phase, with hooks and history.

The one facade the controller, the reports and the doctor drive; the work behind each part lives
in its own module: the iteration under way in `iteration`, rewind and "what if" in
`rewind.time_travel`, and the script, model, stats, hooks, breaks and rewind packages.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Callable, Iterable
from dataclasses import dataclass, replace
from typing import Any

import torch
from torch import nn

from modscope.core.breaks import ArmedBreaks, loss_source
from modscope.core.contract.bounded import HISTORY_LIMIT, append_bounded
from modscope.core.contract.break_spec import BreakCondition
from modscope.core.contract.hook_spec import HookId, HookSpec
from modscope.core.contract.script_names import MISSING
from modscope.core.contract.steps import BreakEvent, HookEvent, Phase, PhaseResult, StepRecord
from modscope.core.contract.tensors import TensorSummary
from modscope.core.contract.timelines import Timeline, TimelineComparison
from modscope.core.contract.tree import Inventory
from modscope.core.hooks.event_log import EventLog
from modscope.core.hooks.manager import AttachedHook, BreakStop, EventDraft, HookManager
from modscope.core.iteration import Iteration, RecordFailed
from modscope.core.memory_budget import copy_budget, history_limit, resolve_budget
from modscope.core.model.inventory import build_inventory
from modscope.core.model.state import initial_state, inspected_module, save_state
from modscope.core.own_loop import OwnLoop
from modscope.core.rewind.checkpoints import Checkpoints, RewindError
from modscope.core.rewind.time_travel import TimeTravel
from modscope.core.script.batches import BatchSource
from modscope.core.script.errors import ScriptError, user_error
from modscope.core.script.loader import LoadedScript, load_script
from modscope.core.script.losses import loss_value
from modscope.core.script.print_capture import PrintSink
from modscope.core.script.warning_capture import WarningCapture
from modscope.core.stats.statediff import StateTracker

EVENT_LIMIT = 5000
"""Hook events the session's log keeps, the newest."""


@dataclass(frozen=True)
class SessionOptions:
    """How a session runs, beside what its script defines: one value that `Session`, its
    `load` and `from_objects`, and the factories of the app and `modscope.inspect()` pass on.

    `sink` takes each line the script prints (None: they go to stdout); `pause` is called
    where a `pause` hook fires; `on_break` where an armed break condition trips (None raises
    `BreakStop`). `rewind` keeps checkpoints within `rewind_budget`; `memory_budget` bounds
    the diff's previous copy and the history (`Session` says how). `history` is the most step
    records the session keeps (fewer when the budget says so); 0 for a caller that takes each
    record as it comes and never looks back (`run` without `--record`), so that no earlier
    record is alive while the next is built.
    """

    sink: PrintSink | None = None
    pause: Callable[[EventDraft], None] | None = None
    on_break: Callable[[BreakEvent], None] | None = None
    rewind: bool = False
    rewind_budget: int | float | None = None
    memory_budget: int | float | None = None
    history: int = HISTORY_LIMIT

    def with_handlers(
        self, sink: PrintSink | None, pause: Callable[[EventDraft], None] | None
    ) -> SessionOptions:
        """These options with the sink and pause handler a controller gives its session."""
        return replace(self, sink=sink, pause=pause)


class Session:
    """A loaded model script: steps its training one phase or one iteration at a time.

    Used from one thread at a time (the app's worker). Every result is a frozen snapshot; live
    tensors never leave the session.

    Rewind (docs/time_travel.md, "Rewind from Python"), with `SessionOptions(rewind=True)` (the
    app's sessions;
    off by default, so the headless commands and the doctor pay nothing for it): before each
    iteration the session keeps a checkpoint of the training state (`core.rewind.checkpoints`),
    within `rewind_budget` bytes (default: 1 GiB or 25% of available memory, whichever is
    smaller), older ones thinned.
    `rewind(step)` goes back to the state after `step` iterations, and re-running from there
    is bit-identical to the first time; `reachable_steps()` lists the steps kept whole;
    `rewind_note()` says why rewind is off.

    `memory_budget` (bytes, a share of the available memory as a float, or None: 25% of it)
    bounds the previous-state copy the diff needs and the step history (`core.memory_budget`):
    keys whose copy does not fit are kept as digests and samples (`StateDiff.sampled`).
    """

    def __init__(self, script: LoadedScript, options: SessionOptions | None = None) -> None:
        options = options or SessionOptions()
        sink, pause = options.sink, options.pause
        self.script = script
        self.memory_budget = resolve_budget(options.memory_budget)
        """Bytes the previous-state copy and the history may take (`core.memory_budget`)."""
        self.on_break = options.on_break
        """Called where an armed break condition trips (see `arm`); None raises `BreakStop`."""
        # The iterations call the script's model as given (`runner`: a DistributedDataParallel
        # wrapper keeps averaging gradients); everything else reads the model inside (`model`).
        self.runner: nn.Module = script.model
        self.model: nn.Module = inspected_module(script.model)
        self.sink = sink
        self.batches = BatchSource(script.inputs)
        self.step = 0
        self._log = EventLog(EVENT_LIMIT)
        self.events = self._log.events
        self._history_most = options.history
        self.history: deque[StepRecord] = deque(maxlen=options.history)
        self.hooks = HookManager(self.model, emit=self._log.add, context=self._context, pause=pause)
        self.last_output: TensorSummary | None = None
        self.last_loss: float | None = None
        self.shown_warnings = WarningCapture()
        """The warnings PyTorch showed during the iterations, for the doctor (`take()`)."""
        self.requested_training: bool | None = None
        """The mode a person asked for through modscope (`run --eval`, the app's train/eval
        key); None while the model is in the mode the script left it in."""
        self._tracker = StateTracker(copy_budget(self.memory_budget))
        self._iteration = Iteration(
            script,
            runner=self.runner,
            model=self.model,
            batches=self.batches,
            hooks=self.hooks,
            log=self._log,
            tracker=self._tracker,
        )
        initial_state(self.model, script.path)  # a state that cannot be read fails the load
        self._checkpoints = (
            Checkpoints(
                self.model,
                optimizer=script.optimizer,
                scheduler=script.scheduler,
                batches=self.batches,
                budget=options.rewind_budget,
                generators=script.generators(),
            )
            if options.rewind
            else None
        )
        self._time_travel = TimeTravel(self._checkpoints, model=self.model)

    @classmethod
    def load(
        cls,
        path: str,
        *,
        model_name: str | None = None,
        options: SessionOptions | None = None,
    ) -> Session:
        """Load a model script (raises `ScriptError` naming the file and line, also when the
        model's state cannot be read: a module cycle, a `state_dict()` that raises)."""
        try:
            script = load_script(
                path, model_name=model_name, sink=options.sink if options else None
            )
        except ScriptError:
            raise
        except Exception as exc:  # the model's own methods, called while reading the contract
            raise ScriptError(user_error(exc, phase=Phase.LOAD, script=path)) from exc
        return cls(script, options)

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
        options: SessionOptions | None = None,
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
        return cls(script, options)

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
        return self._iteration.forward_only

    def phases(self) -> tuple[Phase, ...]:
        """The phases one iteration runs, in order."""
        return self._iteration.phases()

    @property
    def next_phase(self) -> Phase:
        """The phase `run_phase()` runs next."""
        return self._iteration.next_phase

    @property
    def in_iteration(self) -> bool:
        """True between phases of a partly run iteration."""
        return self._iteration.under_way

    @property
    def partial(self) -> bool:
        """True while the model may hold part of an iteration: one under way (`in_iteration`),
        or one dropped halfway (a break, an error, a pause abandoned) since the last complete
        one. `rewind(step)` then restores even the step it stands at."""
        return self._iteration.partial

    def notes(self) -> list[str]:
        """What a person should know about how iterations run, in words."""
        return self._iteration.notes()

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
        self._iteration.reset()
        self.hooks.detach_all()
        self.disarm()

    # -- break conditions ---------------------------------------------------------------------

    @property
    def _breaks(self) -> ArmedBreaks | None:
        """The armed conditions, held by the iteration they are checked around."""
        return self._iteration.breaks

    @property
    def armed(self) -> tuple[BreakCondition, ...]:
        """The break conditions armed now (none: nothing is attached for them)."""
        armed = self._iteration.breaks
        return armed.conditions if armed is not None else ()

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
        armed = None
        if parsed:
            armed = ArmedBreaks(
                self.model,
                parsed,
                trip=self._break_tripped,
                context=self._context,
                loss_fn=loss_source(self.script),
            )
        self.disarm()
        self._iteration.breaks = armed
        return self.armed

    def disarm(self) -> None:
        """Disarm every break condition: their hooks are removed, nothing is watched."""
        armed, self._iteration.breaks = self._iteration.breaks, None
        if armed is not None:
            armed.close()

    def _break_tripped(self, event: BreakEvent) -> None:
        if self.on_break is None:
            raise BreakStop(event)
        self.on_break(event)

    # -- stepping -----------------------------------------------------------------------------

    def run_phase(self) -> PhaseResult:
        """Run the next phase only: forward (with the loss), backward, or the optimizer step."""
        iteration = self._iteration
        if not iteration.under_way:
            failed = iteration.begin(self.step + 1)
            if failed is not None:
                return PhaseResult(self.step + 1, self.next_phase, error=failed)
            if self._checkpoints is not None:
                self._checkpoints.take(self.step)
        phase = iteration.pending[0]
        stopped = iteration.run(
            phase, step=self.step + 1, sink=self.sink, warnings=self.shown_warnings
        )
        if stopped is not None:
            return stopped
        complete = iteration.end_phase(phase)
        events = self._log.flush()
        if phase in (Phase.FORWARD, Phase.TRAIN_STEP):
            output, loss = iteration.results()
            self.last_output = output
            self.last_loss = loss_value(loss)
        record = None
        if complete:
            try:
                record = self._finish_iteration(phase)
            except RecordFailed as failed:  # counted: the step ran, its record did not
                return PhaseResult(
                    self.step,
                    phase,
                    events=events,
                    output=self.last_output,
                    loss=self.last_loss,
                    error=failed.error,
                )
            except Exception as exc:  # the model's state_dict() raised after the iteration
                iteration.drop()
                return PhaseResult(
                    self.step + 1,
                    phase,
                    events=events,
                    error=iteration.error(exc, phase, self.step + 1),
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

    def own_loop(self, optimizer: torch.optim.Optimizer | None = None) -> OwnLoop:
        """Iterations that the user's own code runs, observed at their boundaries
        (`modscope.watch()`; `core.own_loop`). Attach it; close it before the session."""
        self._iteration.own_loop = True
        return OwnLoop(self, self._iteration, self._log, optimizer=optimizer)

    def count_iteration(self, record: StepRecord) -> None:
        """An iteration the user's own loop ran is complete (`OwnLoop`): count it, keep its
        record, as `run_iteration` does for its own."""
        self.step = record.step
        self.last_loss, self.last_output = record.loss, record.output
        self._keep(record)

    def _finish_iteration(self, phase: Phase) -> StepRecord:
        """Count the iteration that ran and keep its record (`Iteration.finish`: raises what
        the model's `state_dict()` raised, or `RecordFailed`, the iteration counted)."""
        try:
            record = self._iteration.finish(
                self.step + 1, phase, loss=self.last_loss, output=self.last_output
            )
        except RecordFailed:
            self.step += 1
            raise
        self.step += 1
        self._keep(record)
        return record

    def _keep(self, record: StepRecord) -> None:
        """Keep `record` in the history, as many as the budget allows (`history_limit`)."""
        limit = history_limit(self.memory_budget, record, self._history_most)
        self.history = append_bounded(self.history, record, limit)

    def _record(self, step: int | None = None) -> StepRecord:
        """The record of the iteration `step` (the last one counted, by default)."""
        return self._iteration.record(
            self.step if step is None else step, loss=self.last_loss, output=self.last_output
        )

    def _context(self) -> tuple[int, Phase]:
        """What a hook firing now belongs to: the step and phase running."""
        return self.step + 1, self._iteration.phase or Phase.FORWARD

    # -- rewind and "what if" (docs/time_travel.md) --------------------------------------------

    @property
    def original(self) -> Timeline | None:
        """The timeline the first rewind went back over, to compare re-runs against
        (`compare_timelines`); None before any rewind that left steps behind."""
        return self._time_travel.original

    def rewind(self, step: int) -> None:
        """Go back to the state after `step` iterations (0: as loaded), dropping a partial
        iteration (or what one dropped halfway left: `partial`) and the history after `step`.
        A step whose checkpoint was thinned away is reached from the nearest earlier one by
        re-running the iterations between (with the hooks attached now, break conditions not
        checked). Raises `ValueError` for a step outside 0..`step`, `RewindError` when rewind
        is off or the step is before the oldest checkpoint, or when an iteration of the re-run
        fails."""
        base = self._time_travel.restore(
            step,
            now=self.step,
            partial=self.partial,
            history=self.history,
            events=self.events,
            end_iteration=self._iteration.reset,
        )
        if base is None:
            return
        self.step = base
        self._iteration.dropped = False
        last = self.history[-1] if self.history and self.history[-1].step == base else None
        self.last_loss = last.loss if last else None
        self.last_output = last.output if last else None
        self._iteration.rebase()
        with self._iteration.breaks_off():
            while self.step < step:
                result = self.run_iteration()
                if result.error is not None or result.abandoned:
                    raise RewindError(f"re-running step {self.step + 1} failed: {result.error}")

    def compare_timelines(self, step: int | None = None) -> TimelineComparison:
        """This timeline's `state_dict` after `step` (default: the last step run) against the
        original timeline's after the same step ("what if": a hook attached after a rewind,
        what did it change?). Raises `RewindError` when there is no original timeline yet
        and `ValueError` for a step outside 0..`step`."""
        return self._time_travel.compare(
            step, now=self.step, partial=self.partial, history=self.history
        )

    def reachable_steps(self) -> tuple[int, ...]:
        """The steps `rewind` restores without re-running (kept checkpoints, and the present);
        any step from the first of them on can be rewound to. Empty when rewind is off."""
        return self._time_travel.reachable_steps(self.step)

    def rewind_note(self) -> str | None:
        """Why rewind is off (None while it is on)."""
        return self._time_travel.note()

    # -- saving -------------------------------------------------------------------------------

    def save_state(self, path: str) -> None:
        """Write the `state_dict` of the script's own model object with `torch.save`, atomically
        (`core.model.state.save_state`): its keys are the plain loop's `model.state_dict()`, with
        `module.` when the script's model is a (Distributed)DataParallel wrapper."""
        namespace = vars(self.script.module) if self.script.module is not None else {}
        own = namespace.get(self.script.model_name)
        save_state(own if isinstance(own, nn.Module) else self.runner, path)
