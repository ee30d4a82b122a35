"""The `nan` break condition's hooks: where the first NaN/Inf starts, forward or backward.

`nan` locates the origin of the first non-finite value:
- forward: the first module call (in execution order, so the leaf-most) whose output holds
  NaN/Inf while its inputs, read by a forward-pre hook before it ran, were finite; the batch
  when the first module call of the phase got non-finite inputs;
- backward: tensor hooks registered from the forward hooks (never module-level full backward
  hooks, which break a following in-place op: PyTorch #61519) on each call's outputs, inputs
  and its module's own parameters: the first module whose gradient w.r.t. an input (or one of
  its parameters) holds NaN/Inf while the gradients w.r.t. its outputs were finite;
- else the loss (non-finite from a finite output), the optimizer step (a finite parameter
  turned non-finite).
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.breaks.finite import (
    FinitenessCache,
    Flag,
    Seen,
    and_not,
    any_bad,
    as_seen,
    floats,
    host_values,
    nonfinite,
    or_,
)
from modscope.core.breaks.places import distinct_parameters, module_name
from modscope.core.contract.break_spec import BreakCondition
from modscope.core.contract.steps import BreakEvent
from modscope.core.contract.tensors import TensorSummary
from modscope.core.model.walk import (
    compiled_region,
    distinct_modules,
    eager_hook,
    hook_sites,
)


@dataclass
class _GradCall:
    """One forward call of a module while `nan` is armed: what its gradients showed so far.

    `grad_out` keeps what arrived w.r.t. its outputs until every input and parameter
    gradient it waits for has come (then it is dropped: no gradient outlives its use longer).
    """

    path: str
    module: nn.Module
    waiting: int
    out_bad: Flag = False
    grad_out: list[Seen] = field(default_factory=list)


class NanOriginHooks:
    """The `nan` condition's part of `ArmedBreaks` (mixed into it): its hooks and checks.

    It holds no state of its own: `ArmedBreaks` sets the attributes below and provides the
    tripping (`_active`, `_trip`) and the events (`_event`, `_loss_event`).
    """

    model: nn.Module
    _nan: BreakCondition | None
    _finite: FinitenessCache
    _handles: list[RemovableHandle]
    _transient: list[RemovableHandle]
    _pending: list[tuple[torch.Tensor, Callable[[], BreakEvent]]]
    _entered: dict[int, list[tuple[Flag, list[Seen]]]]
    _out_bad: dict[int, Flag]
    _hooked_params: set[int]
    _params_before: list[tuple[str, nn.Parameter, Flag]] | None
    _first_call: bool
    _grads: bool
    _active: Callable[[BreakCondition | None], bool]
    _trip: Callable[[BreakCondition, BreakEvent], None]
    _event: Callable[..., BreakEvent]
    _loss_event: Callable[
        [BreakCondition, TensorSummary | None, TensorSummary | None, str], BreakEvent
    ]

    def _found(self, flag: Flag, build: Callable[[], BreakEvent]) -> None:
        """A `nan` origin where `flag` holds: tripped now, or once the flag is read back."""
        if flag is False or self._nan is None:
            return
        if flag is True:
            self._trip(self._nan, build())
        else:
            assert isinstance(flag, torch.Tensor)
            self._pending.append((flag, build))

    def _read_pending(self) -> None:
        pending, self._pending = self._pending, []
        if not pending or not self._active(self._nan):
            return
        hits = host_values([flag for flag, _ in pending])
        for hit, (_, build) in zip(hits, pending, strict=True):
            if hit:
                assert self._nan is not None
                self._trip(self._nan, build())
                return

    # -- forward -----------------------------------------------------------------------------

    def _attach_nan(self) -> None:
        compiled = compiled_region(self.model)
        for path, module, inside in hook_sites(distinct_modules(self.model), compiled):
            pre = eager_hook(self._nan_pre(path), compiled=inside)
            post = eager_hook(self._nan_post(path), compiled=inside)
            self._handles.append(module.register_forward_pre_hook(pre, with_kwargs=True))
            self._handles.append(module.register_forward_hook(post, with_kwargs=True))

    def _nan_pre(self, path: str) -> Callable[..., None]:
        def nan_pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
            entered = self._entered.setdefault(id(module), [])
            if not self._active(self._nan):
                entered.append((False, []))
                return
            inputs = floats(args, kwargs)
            with torch.no_grad():
                bad = self._finite.check(inputs)
                seen = as_seen(inputs, bad)
            entered.append((bad, seen))
            if self._first_call:
                self._first_call = False
                assert self._nan is not None
                nan = self._nan

                def batch() -> BreakEvent:
                    return self._event(
                        nan,
                        path=None,
                        inputs=seen,
                        labels=("batch", ""),
                        message=f"the batch holds NaN/Inf: the inputs of "
                        f"{module_name(path)}, the first module to run, were non-finite before any "
                        "module ran",
                    )

                self._found(bad, batch)

        return nan_pre

    def _nan_post(self, path: str) -> Callable[..., None]:
        def nan_post(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> None:
            entered = self._entered.get(id(module))
            bad_in, seen_in = entered.pop() if entered else (False, [])
            if not self._active(self._nan):
                return
            outputs = floats(output)
            with torch.no_grad():
                bad_out = self._finite.check(outputs)
                seen_out = as_seen(outputs, bad_out)
            nan = self._nan
            assert nan is not None

            def origin() -> BreakEvent:
                return self._event(
                    nan,
                    path=path,
                    module=module,
                    inputs=seen_in,
                    outputs=seen_out,
                    message=f"the output of {module_name(path)} holds NaN/Inf while its inputs "
                    "were finite: the NaN starts in its forward",
                )

            self._found(and_not(bad_out, bad_in), origin)
            if self._grads and torch.is_grad_enabled():
                self._watch_grads(path, module, floats(args, kwargs), outputs)

        return nan_post

    # -- backward ----------------------------------------------------------------------------

    def _watch_grads(
        self,
        path: str,
        module: nn.Module,
        inputs: list[torch.Tensor],
        outputs: list[torch.Tensor],
    ) -> None:
        """Tensor hooks for one call: on its outputs, its inputs and (once an iteration) its
        module's own parameters; removed after the backward phase or with the iteration."""
        outs = [t for t in outputs if t.requires_grad]
        ins = [t for t in inputs if t.requires_grad]
        params = [
            (name, p)
            for name, p in module._parameters.items()
            if p is not None and p.requires_grad and id(p) not in self._hooked_params
        ]
        if not outs or not (ins or params):
            return  # no gradient to compare with, or none to compare
        call = _GradCall(path, module, waiting=len(ins) + len(params))
        for t in outs:
            self._transient.append(t.register_hook(self._grad_out(call)))
        for t in ins:
            self._transient.append(t.register_hook(self._grad_in(call, None)))
        for name, p in params:
            self._hooked_params.add(id(p))
            self._transient.append(p.register_hook(self._grad_in(call, name)))

    def _grad_out(self, call: _GradCall) -> Callable[[torch.Tensor], None]:
        def grad_out(grad: torch.Tensor) -> None:
            if not self._active(self._nan):
                return
            with torch.no_grad():
                bad = self._finite.check([grad])
                call.grad_out += as_seen([grad], bad)
            call.out_bad = or_(call.out_bad, bad)
            key = id(call.module)
            self._out_bad[key] = or_(self._out_bad.get(key, False), bad)

        return grad_out

    def _grad_in(self, call: _GradCall, param: str | None) -> Callable[[torch.Tensor], None]:
        def grad_in(grad: torch.Tensor) -> None:
            call.waiting -= 1
            try:
                if not self._active(self._nan):
                    return
                # A parameter's gradient sums every call of its module: compare it with what
                # arrived for all of them.
                out_bad = call.out_bad if param is None else self._out_bad.get(id(call.module))
                with torch.no_grad():
                    bad = self._finite.check([grad])
                    seen = as_seen([grad], bad)
                grad_out = list(call.grad_out)
                what = "an input" if param is None else f"its parameter {param}"
                nan = self._nan
                assert nan is not None

                def origin() -> BreakEvent:
                    return self._event(
                        nan,
                        path=call.path,
                        module=call.module,
                        inputs=seen,
                        outputs=grad_out,
                        labels=("grad_input" if param is None else "gradient", "grad_output"),
                        message=f"the gradient w.r.t. {what} of {module_name(call.path)} holds "
                        "NaN/Inf while the gradient w.r.t. its output was finite: the NaN "
                        "starts in its backward",
                    )

                self._found(and_not(bad, out_bad if out_bad is not None else False), origin)
            finally:
                if call.waiting <= 0:
                    call.grad_out = []

        return grad_in

    def _drop_transient(self) -> None:
        for handle in self._transient:
            handle.remove()
        self._transient.clear()
        self._hooked_params.clear()
        self._out_bad.clear()

    # -- the loss and the optimizer step -----------------------------------------------------

    def _check_nan_loss(self, output: TensorSummary | None, loss: TensorSummary | None) -> None:
        nan = self._nan
        if nan is None or not self._active(nan):
            return
        if nonfinite(loss) and not nonfinite(output):
            message = (
                "the loss is NaN/Inf while the model's output is finite: the loss "
                "computation made it"
            )
            self._trip(nan, self._loss_event(nan, output, loss, message))
        elif nonfinite(output):
            message = (
                "the model's output holds NaN/Inf, but no module's own output did first: "
                "it arose outside every module's forward (in compute_loss or train_step, "
                "or in a module PyTorch refuses hooks on)"
            )
            self._trip(nan, self._loss_event(nan, output, loss, message))

    def _note_parameters(self) -> None:
        """Before the optimizer step: which parameters are non-finite already."""
        with torch.no_grad():
            self._params_before = [
                (name, p, any_bad([p])) for name, p in distinct_parameters(self.model)
            ]

    def _check_parameters(self) -> None:
        before, self._params_before = self._params_before, None
        if before is None or not self._active(self._nan):
            return
        with torch.no_grad():
            turned = host_values([and_not(any_bad([p]), was) for _, p, was in before])
        hit = next((i for i, t in enumerate(turned) if t), None)
        if hit is None:
            return
        name, p, _ = before[hit]
        owner_path = name.rpartition(".")[0]
        owner = self.model.get_submodule(owner_path) if owner_path else self.model
        assert self._nan is not None
        grad = [p.grad] if p.grad is not None else []
        self._trip(
            self._nan,
            self._event(
                self._nan,
                path=owner_path,
                module=owner,
                inputs=grad,
                outputs=[p],
                labels=("gradient", "parameter"),
                message=f"the optimizer step turned parameter {name} non-finite (its gradient "
                "was the input of the update)",
            ),
        )
