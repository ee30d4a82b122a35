"""`ArmedBreaks`: arms break conditions on a model, checks them around each phase, trips them."""

from __future__ import annotations

import math
from collections.abc import Callable, Iterable, Sequence
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.breaks.finite import (
    FinitenessCache,
    Flag,
    Seen,
    floats,
    host_values,
    summaries,
)
from modscope.core.breaks.nan_origin import NanOriginHooks
from modscope.core.breaks.places import (
    distinct_parameters,
    find_module,
    forward_location,
    module_name,
)
from modscope.core.contract.break_spec import BreakCondition, BreakMetric
from modscope.core.contract.steps import BreakEvent, Phase
from modscope.core.contract.tensors import TensorSummary
from modscope.core.model.walk import compiled_region, eager_hook
from modscope.core.script.callables import describe_callable
from modscope.core.script.losses import loss_value
from modscope.core.stats.summary import PendingSummary, resolve

Trip = Callable[[BreakEvent], None]


def _norm(t: torch.Tensor) -> torch.Tensor:
    """The 2-norm of a gradient as a float32 0-d tensor on its device."""
    g = t.detach()
    if g.is_sparse:
        g = g.coalesce().values()
    if g.dtype in (torch.float16, torch.bfloat16):
        g = g.float()
    return torch.linalg.vector_norm(g).float()


class ArmedBreaks(NanOriginHooks):
    """The armed break conditions on one model: their hooks and the checks around each phase.

    `trip(event)` is called where a condition trips, at a point where going on is valid
    (inside the module's hook, or right before or after a phase); it returns to let the
    iteration go on, or raises to unwind it. `context()` says the step and phase running.
    Each condition trips at most once per iteration. Raises `BreakSpecError` for a module
    condition naming no module (or one PyTorch refuses hooks on, or `grad-norm` on a module
    without trainable parameters).
    """

    def __init__(
        self,
        model: nn.Module,
        conditions: Iterable[BreakCondition],
        *,
        trip: Trip,
        context: Callable[[], tuple[int, Phase]],
        loss_fn: Callable[..., Any] | None = None,
    ) -> None:
        self.model = model
        self.conditions = tuple(dict.fromkeys(conditions))
        self._trip_to = trip
        self.context = context
        self._loss_where = describe_callable(loss_fn)[1] if loss_fn is not None else None
        self._nan = next((c for c in self.conditions if c.metric is BreakMetric.NAN), None)
        self._targets = {c: find_module(model, c) for c in self.conditions if c.watches_module}
        self._handles: list[RemovableHandle] = []
        self._transient: list[RemovableHandle] = []
        self._tripped: set[BreakCondition] = set()
        self._pending: list[tuple[torch.Tensor, Callable[[], BreakEvent]]] = []
        self._entered: dict[int, list[tuple[Flag, list[Seen]]]] = {}
        self._out_bad: dict[int, Flag] = {}
        self._hooked_params: set[int] = set()
        self._params_before: list[tuple[str, nn.Parameter, Flag]] | None = None
        self._finite = FinitenessCache()
        # Set by `before_phase`: conditions armed halfway through a forward (at a pause) must not
        # take the next module for the first one.
        self._first_call = False
        self._grads = False
        try:
            self._attach()
        except BaseException:
            self.close()
            raise

    @property
    def handle_ids(self) -> frozenset[int]:
        """The ids of the module hooks the conditions hold (a hook listing tells them apart)."""
        return frozenset(h.id for h in self._handles)

    def close(self) -> None:
        """Remove every hook the armed conditions added."""
        self.end_iteration()
        for handle in self._handles:
            handle.remove()
        self._handles.clear()

    def end_iteration(self) -> None:
        """The iteration ended (or was dropped): tensor hooks off, per-iteration state reset."""
        self._drop_transient()
        self._tripped.clear()
        self._pending.clear()
        self._entered.clear()
        self._params_before = None
        self._finite.clear()
        self._first_call = False

    # -- around each phase -------------------------------------------------------------------

    def before_phase(self, phase: Phase, *, grads: bool) -> None:
        """Before `phase` runs; `grads`: a backward pass follows, so check gradients too."""
        step, _ = self.context()
        self._finite.clear()
        # Only a forward runs the model from its batch (a checkpointed backward reruns modules).
        self._first_call = phase in (Phase.FORWARD, Phase.TRAIN_STEP)
        self._grads = grads
        for c in self.conditions:
            if c.metric is BreakMetric.STEP and c.threshold == step:
                message = f"step {step} is about to run ({phase.value} next)"
                self._trip(c, self._event(c, message=message))
        if self._nan is not None and phase in (Phase.OPTIMIZER, Phase.TRAIN_STEP):
            self._note_parameters()

    def after_phase(
        self,
        phase: Phase,
        *,
        output: PendingSummary | None = None,
        loss: PendingSummary | None = None,
    ) -> None:
        """After `phase` ran: deferred module checks read back, then the phase's own checks
        (`output` and `loss`: the forward's summaries, as the session captured them)."""
        self._read_pending()
        if phase in (Phase.FORWARD, Phase.TRAIN_STEP):
            self._check_loss(output, loss)
        if phase in (Phase.BACKWARD, Phase.TRAIN_STEP):
            self._drop_transient()
            self._check_grad_norms()
        if phase in (Phase.OPTIMIZER, Phase.TRAIN_STEP):
            self._check_parameters()

    # -- tripping ----------------------------------------------------------------------------

    def _active(self, c: BreakCondition | None) -> bool:
        return c is not None and c not in self._tripped

    def _trip(self, c: BreakCondition, event: BreakEvent) -> None:
        if c in self._tripped:
            return
        self._tripped.add(c)
        self._trip_to(event)

    def _event(
        self,
        c: BreakCondition,
        *,
        message: str,
        path: str | None = None,
        module: nn.Module | None = None,
        inputs: Sequence[Seen] = (),
        outputs: Sequence[Seen] = (),
        where: str | None = None,
        labels: tuple[str, str] = ("inputs", "outputs"),
    ) -> BreakEvent:
        step, phase = self.context()
        seen = summaries([*inputs, *outputs])
        return BreakEvent(
            step=step,
            phase=phase,
            condition=str(c),
            module=path,
            class_name=type(module).__name__ if module is not None else None,
            where=forward_location(module) if module is not None else where,
            inputs=seen[: len(inputs)],
            outputs=seen[len(inputs) :],
            message=message,
            labels=labels,
        )

    # -- hooks -------------------------------------------------------------------------------

    def _attach(self) -> None:
        if self._nan is not None:
            self._attach_nan()
        compiled = compiled_region(self.model)
        for c, (path, module) in self._targets.items():
            if c.metric is BreakMetric.OUTPUT_ABSMAX:
                hook = eager_hook(self._absmax(c, path), compiled=id(module) in compiled)
                self._handles.append(module.register_forward_hook(hook, with_kwargs=True))

    def _absmax(self, c: BreakCondition, path: str) -> Callable[..., None]:
        def absmax(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            if not self._active(c):
                return
            outputs = floats(output)
            if not outputs:
                return
            # One module, one read-back per call: the condition needs the number now, to stop
            # inside the module's hook.
            # NaN is no magnitude (`nan` watches for it); an infinity is the largest one.
            with torch.no_grad():
                peaks = [
                    t.detach().abs().nan_to_num(nan=0.0, posinf=math.inf).amax().float()
                    for t in outputs
                ]
            peak = max(host_values(peaks))
            if c.holds(peak):
                self._trip(
                    c,
                    self._event(
                        c,
                        path=path,
                        module=module,
                        inputs=floats(args, kwargs),
                        outputs=outputs,
                        message=f"the output of {module_name(path)} reached |x| = {peak:.6g}, "
                        f"above {c.threshold:g}",
                    ),
                )

        return absmax

    # -- the checks after a phase ------------------------------------------------------------

    def _check_loss(self, output_p: PendingSummary | None, loss_p: PendingSummary | None) -> None:
        losses = [c for c in self.conditions if c.metric is BreakMetric.LOSS and self._active(c)]
        if not losses and not self._active(self._nan):
            return
        output, loss = resolve([output_p, loss_p])
        self._check_nan_loss(output, loss)
        value = loss_value(loss)
        for c in losses:
            if value is not None and c.holds(value):
                side = "above" if c.op == ">" else "below"
                message = f"the loss is {value:.6g}, {side} {c.threshold:g}"
                self._trip(c, self._loss_event(c, output, loss, message))

    def _loss_event(
        self,
        c: BreakCondition,
        output: TensorSummary | None,
        loss: TensorSummary | None,
        message: str,
    ) -> BreakEvent:
        step, phase = self.context()
        return BreakEvent(
            step=step,
            phase=phase,
            condition=str(c),
            module=None,
            class_name=None,
            where=self._loss_where,
            inputs=(output,) if output is not None else (),
            outputs=(loss,) if loss is not None else (),
            message=message,
            labels=("output", "loss"),
        )

    def _check_grad_norms(self) -> None:
        for c in self.conditions:
            if c.metric is not BreakMetric.GRAD_NORM or not self._active(c):
                continue
            path: str | None = None
            module = self.model
            if c in self._targets:
                path, module = self._targets[c]
            named = [(n, p) for n, p in distinct_parameters(module) if p.grad is not None]
            if not named:
                continue
            with torch.no_grad():
                norms = host_values([_norm(p.grad) for _, p in named])  # type: ignore[arg-type]
            total = float(sum(n * n for n in norms)) ** 0.5
            if not c.holds(total):
                continue
            top = max(range(len(norms)), key=lambda i: norms[i])
            prefix = f"{path}." if path else ""
            name, p = named[top]
            whose = (
                "the gradient norm" if path is None else f"the gradient norm of {module_name(path)}"
            )
            message = (
                f"{whose} is {total:.6g}, above {c.threshold:g} (largest: {prefix}{name}, "
                f"{norms[top]:.6g})"
            )
            assert p.grad is not None
            self._trip(
                c,
                self._event(
                    c,
                    path=path,
                    module=module if path is not None else None,
                    outputs=[p.grad],
                    message=message,
                    labels=("", "largest gradient"),
                ),
            )
