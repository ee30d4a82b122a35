"""Iterations that the user's own code runs (`modscope.watch()`), observed at their boundaries.

modscope drives nothing here: the user's loop calls the model, `backward()` and the optimizer.
`OwnLoop` sees the phases from outside and gives the session what `run_iteration` gives it:
- forward: the outermost call of the model, or of one of its direct children (forward pre- and
  post-hooks on the module the user calls, the model inside any wrapper, and its children),
  outside a backward pass (activation checkpointing re-runs forwards there); the calls before a
  backward are one forward phase;
- backward: a `Tensor.backward()` call while a forward of the watched model has run. The loss
  of a step is the sum of the values `backward()` was called on since the step before (with
  gradient accumulation and the usual `loss / k` scaling, the mean over the micro-batches), or
  the value handed to `step(loss)`;
- the optimizer step: the optimizer's step pre- and post-hooks; a step is one
  `optimizer.step()` (with gradient accumulation, one step for several backward passes).

The record of a step is built at the optimizer's post-hook, while the gradients are still
there, and counted at the next boundary (the next forward, `step()`, `close()`), so that a
scheduler stepped after the optimizer has set the learning rates the record carries, as in
`modscope run`. Every hook here is an observer: it returns None, reads no random numbers and
changes no tensor.
"""

from __future__ import annotations

import contextlib
import dataclasses
import threading
from collections.abc import Callable
from typing import Any, Protocol

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.contract.steps import HookEvent, Phase, StepRecord, UserError
from modscope.core.hooks.event_log import EventLog
from modscope.core.iteration import Iteration, learning_rates
from modscope.core.model.walk import compiled_region, eager_hook, hook_sites, in_backward
from modscope.core.script.losses import main_output
from modscope.core.script.warning_capture import WarningCapture
from modscope.core.stats.summary import PendingSummary, capture, resolve


class LoopHost(Protocol):
    """What `OwnLoop` needs of its session (`core.session.Session`)."""

    step: int
    model: nn.Module
    runner: nn.Module

    @property
    def shown_warnings(self) -> WarningCapture: ...

    def count_iteration(self, record: StepRecord) -> None: ...


@dataclasses.dataclass(frozen=True)
class OwnStep:
    """One step of the user's loop, counted: its record (None when modscope could not build
    it: `error` says why) and the hook events of its phases."""

    step: int
    record: StepRecord | None
    events: tuple[HookEvent, ...]
    error: UserError | None = None


class _Patch:
    """A torch method wrapped while some `OwnLoop` is attached (once, however many): `wrap(
    original, loops)` makes the wrapper, which reads the loops attached now; the original is
    put back when the last one closes."""

    def __init__(
        self,
        owner: type,
        name: str,
        wrap: Callable[[Callable[..., Any], list[OwnLoop]], Callable[..., Any]],
    ) -> None:
        self._owner, self._name, self._wrap = owner, name, wrap
        self._lock = threading.Lock()
        self._loops: list[OwnLoop] = []
        self._original: Callable[..., Any] | None = None
        self._wrapper: Callable[..., Any] | None = None

    def add(self, loop: OwnLoop) -> None:
        with self._lock:
            if not self._loops:
                original = self._original = getattr(self._owner, self._name)
                wrapper = self._wrapper = self._wrap(original, self._loops)
                wrapper.__wrapped__ = original  # type: ignore[attr-defined]
                setattr(self._owner, self._name, wrapper)
            self._loops.append(loop)

    def remove(self, loop: OwnLoop) -> None:
        with self._lock:
            if loop in self._loops:
                self._loops.remove(loop)
            if not self._loops and self._original is not None:
                # Put back only what is still ours: a library that wrapped the method after
                # us keeps its wrapper (ours under it, with no loop, only passes calls on).
                if getattr(self._owner, self._name) is self._wrapper:
                    setattr(self._owner, self._name, self._original)
                self._original = self._wrapper = None


def _backward(original: Callable[..., Any], attached: list[OwnLoop]) -> Callable[..., Any]:
    """`Tensor.backward` telling each loop that saw a forward when a backward pass begins and
    ends."""

    def backward(tensor: torch.Tensor, *args: Any, **kwargs: Any) -> Any:
        loops = [lp for lp in attached if lp.forward_seen]
        for lp in loops:
            lp.backward_begins(tensor)
        try:
            return original(tensor, *args, **kwargs)
        finally:
            for lp in loops:
                lp.backward_ends()

    return backward


def _scaler_step(original: Callable[..., Any], attached: list[OwnLoop]) -> Callable[..., Any]:
    """`GradScaler.step`: a call that did not step a loop's optimizer (inf/NaN gradients found)
    is a skipped step for it."""

    def step(scaler: Any, optimizer: Any, *args: Any, **kwargs: Any) -> Any:
        loops = [lp for lp in attached if lp.optimizer is optimizer]
        before = [lp.optimizer_steps for lp in loops]
        result = original(scaler, optimizer, *args, **kwargs)
        for lp, seen in zip(loops, before, strict=True):
            if lp.optimizer_steps == seen:
                lp.skipped()
        return result

    return step


BACKWARD_CALLS = _Patch(torch.Tensor, "backward", _backward)
SCALER_STEPS = _Patch(torch.amp.GradScaler, "step", _scaler_step)


class OwnLoop:
    """The phases of the user's loop on one session (see the module docstring): `attach()`,
    then the hooks do the work; `step(loss)` counts a step by hand; `close()` removes every
    hook and counts a step left pending. `on_step(own_step)` is called as each step counts."""

    def __init__(
        self,
        host: LoopHost,
        iteration: Iteration,
        log: EventLog,
        *,
        optimizer: torch.optim.Optimizer | None,
    ) -> None:
        self.host = host
        self.iteration = iteration
        self.log = log
        self.optimizer = optimizer
        self.on_step: Callable[[OwnStep], None] = lambda step: None
        self.optimizer_steps = 0
        """The optimizer's steps seen (a GradScaler's call that adds none skipped one)."""
        self.forward_seen = False
        """A forward of the watched model ran since the last step (its `backward()` counts)."""
        self._handles: list[RemovableHandle] = []
        self._depth = 0
        self._forward_open = False
        self._forward_grads = False
        self._output: PendingSummary | None = None
        self._losses: list[torch.Tensor] = []
        self._given_loss: float | None = None
        self._done = False
        """An optimizer step completed (or was skipped) that is not counted yet."""
        self._pending: StepRecord | None = None
        """Its record (None when modscope could not build it: `_error` says why)."""
        self._events: list[HookEvent] = []
        self._error: UserError | None = None
        self._started = False
        self._warnings = contextlib.ExitStack()

    # -- attaching ----------------------------------------------------------------------------

    def attach(self) -> None:
        """Put the hooks on; when one cannot be put on, those that were are removed."""
        try:
            for module, inside in self._forward_sites():
                pre = eager_hook(self._forward_pre, compiled=inside)
                post = eager_hook(self._forward_post, compiled=inside)
                self._handles.append(module.register_forward_pre_hook(pre))
                # Also when the forward raises: a loop that catches the error (a batch-size
                # search after an out-of-memory) goes on at depth 0.
                self._handles.append(module.register_forward_hook(post, always_call=True))
            if self.optimizer is not None:
                self._handles.append(self.optimizer.register_step_pre_hook(self._optimizer_pre))
                self._handles.append(self.optimizer.register_step_post_hook(self._optimizer_post))
            BACKWARD_CALLS.add(self)
            if self.optimizer is not None:
                SCALER_STEPS.add(self)
            # The warnings PyTorch shows while the loop runs, for the doctor, as in `run`.
            self._warnings.enter_context(self.host.shown_warnings.capturing())
        except BaseException:
            self.close()
            raise

    def _forward_sites(self) -> list[tuple[nn.Module, bool]]:
        """Where a forward of the watched model can begin: the module the user calls, the model
        inside any wrapper, and its direct children (a Lightning `training_step` calls
        `self.encoder(x)`), those PyTorch refuses hooks on and those sealed in a `fullgraph`
        call left out."""
        runner, model = self.host.runner, self.host.model
        candidates = [("", runner), ("", model), *model.named_children()]
        unique = list({id(m): (p, m) for p, m in candidates}.values())
        compiled = compiled_region(runner)
        return [(m, inside) for _, m, inside in hook_sites(unique, compiled)]

    def close(self) -> None:
        """Count a step the optimizer completed and nothing counted yet; drop a partial one;
        remove every hook."""
        try:
            if self._done:
                self._count()
        finally:
            self._warnings.close()
            BACKWARD_CALLS.remove(self)
            SCALER_STEPS.remove(self)
            for handle in self._handles:
                handle.remove()
            self._handles.clear()
            self.iteration.phase = None
            self.iteration.reset()

    # -- the boundaries -----------------------------------------------------------------------

    def step(self, loss: Any = None) -> OwnStep | None:
        """Count a step now, its loss `loss` (a tensor or a number; None: what `backward()`
        was called on). With an optimizer, the step its last `step()` completed; without one,
        the iteration that ran since the step before (its record built now). None when no
        forward ran since the step before."""
        if loss is not None:
            self._given_loss = (
                float(loss.detach().float().item()) if torch.is_tensor(loss) else float(loss)
            )
        if not self._done:
            if not self.forward_seen:
                self._given_loss = None
                return None
            self._close_forward(None)
            self._snapshot()
        return self._count()

    def _forward_pre(self, module: nn.Module, args: Any) -> None:
        if self._depth == 0 and not in_backward():
            if self._done:
                self._count()  # the step before ended at its optimizer step
            grads = torch.is_grad_enabled()
            # Calls of the model (or of its children) before a backward are one forward
            # phase; one under another grad mode (an eval pass under no_grad) begins another.
            if not self._forward_open or grads != self._forward_grads:
                self._close_forward(None)
                self._begin(Phase.FORWARD, grads=grads)
                self._forward_open, self._forward_grads = True, grads
            self.forward_seen = True
        self._depth += 1

    def _forward_post(self, module: nn.Module, args: Any, output: Any) -> None:
        self._depth = max(0, self._depth - 1)
        if self._depth == 0 and self._forward_open and not in_backward():
            out = main_output(output)
            self._output = capture(out) if isinstance(out, torch.Tensor) else None

    def backward_begins(self, loss: torch.Tensor) -> None:
        if self._done:
            return  # a backward after the optimizer step and before the next forward
        self._losses.append(loss.detach())
        self._close_forward(capture(loss) if loss.numel() == 1 else None)
        self._begin(Phase.BACKWARD, grads=False)

    def backward_ends(self) -> None:
        if self.iteration.phase is not Phase.BACKWARD:
            return
        try:
            self._end(Phase.BACKWARD)
        finally:
            self.iteration.hooks.end_backward()

    def _optimizer_pre(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        if self._done:
            self._count()  # two optimizer steps with no forward between
        self._close_forward(None)
        self._begin(Phase.OPTIMIZER, grads=False)

    def _optimizer_post(self, optimizer: Any, args: Any, kwargs: Any) -> None:
        self.optimizer_steps += 1
        self._end(Phase.OPTIMIZER)
        self._snapshot()

    def skipped(self) -> None:
        """A GradScaler found inf/NaN gradients and did not step the optimizer: the step
        counts, its record marked `skipped`."""
        if self._done:
            return
        self._close_forward(None)
        self._snapshot(skipped=True)

    # -- phases -------------------------------------------------------------------------------

    def _begin(self, phase: Phase, *, grads: bool) -> None:
        it = self.iteration
        if not self._started:
            self._started = True
            failed = it.take_baseline(self.host.step + 1)
            if failed is not None:
                self._error = failed
        it.phase = phase
        if it.breaks is not None:
            it.breaks.before_phase(phase, grads=grads)

    def _end(self, phase: Phase, *, output: Any = None, loss: Any = None) -> None:
        it = self.iteration
        breaks = it.breaks
        try:
            if breaks is not None:
                breaks.after_phase(phase, output=output, loss=loss)
        finally:
            it.phase = None
            self._events.extend(self.log.flush())

    def _close_forward(self, loss: PendingSummary | None) -> None:
        """The forward phase ends: at a backward (its loss known), a step or the next forward."""
        if not self._forward_open:
            return
        self._forward_open = False
        self.iteration.phase = Phase.FORWARD
        self._end(Phase.FORWARD, output=self._output, loss=loss)

    # -- the record ---------------------------------------------------------------------------

    def _snapshot(self, *, skipped: bool = False) -> None:
        """The record of the step the optimizer completed (or skipped), while its gradients are
        there."""
        self._done = True
        step = self.host.step + 1
        if self._error is not None:  # the baseline could not be taken
            self._pending = None
            return
        output = resolve([self._output])[0] if self._output is not None else None
        try:
            record = self.iteration.record(step, loss=None, output=output)
            self._pending = dataclasses.replace(record, skipped=True) if skipped else record
        except Exception as exc:
            self._error = self.iteration.error(exc, Phase.OPTIMIZER, step)
            self.iteration.baseline_due = True

    def _count(self) -> OwnStep:
        record, self._pending, self._done = self._pending, None, False
        step = self.host.step + 1
        loss = self._given_loss
        scalars = [t.float().reshape(()) for t in self._losses if t.numel() == 1]
        if loss is None and scalars:
            loss = float(torch.stack(scalars).sum().item())
        lr = learning_rates(self.optimizer)
        if record is not None:
            record = dataclasses.replace(record, loss=loss, lr=lr)
            self.host.count_iteration(record)
        else:
            self.host.step = step
        done = OwnStep(step, record, tuple(self._events), self._error)
        self._events, self._losses, self._given_loss = [], [], None
        self._output, self._error = None, None
        self._started = self.forward_seen = False
        self.iteration.reset()
        self.on_step(done)
        return done
