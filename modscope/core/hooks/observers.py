"""modscope's observing hooks on one module, sharing what PyTorch calls.

`--hooks all` observes forward-pre, forward, backward and backward-pre on every module. As
separate registrations that is four module hooks and three tensor hooks per module each
iteration, against the two and two that the cheapest way to see the same values needs
(`benchmarks/workloads.py`'s no-op hooks). A `ModuleObserver` holds the observing hooks of one
module: one forward-pre hook for FORWARD_PRE, one forward hook for FORWARD and for the gradient
observers, which put tensor hooks on the outputs (and, for BACKWARD, the inputs). A gradient
reaches one tensor hook per tensor for the iteration (`GradWaiters`), however many modules'
observers wait on it: a module's output is the next one's input.

Each modscope hook keeps its own id, events and row in the hooks pane; only the registration
is shared, and only while that changes nothing: a hook joins an observer when the module hook
it would share is still the newest on the module (`ModuleObserver.can_take`), so that it runs
where a registration of its own would (after every hook registered before it).
"""

from __future__ import annotations

import weakref
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from functools import partial
from typing import TYPE_CHECKING, Any, Protocol

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

from modscope.core.contract.hook_notes import INPUT_GRAD_NOTE
from modscope.core.contract.hook_spec import HookAction, HookId, HookKind, HookSpec
from modscope.core.model.walk import eager_hook
from modscope.core.stats.summary import PendingSummary, flatten_tensors

if TYPE_CHECKING:
    from modscope.core.hooks.captures import CaptureMemo

OBSERVED_TOGETHER = frozenset(
    (HookKind.FORWARD_PRE, HookKind.FORWARD, HookKind.BACKWARD, HookKind.BACKWARD_PRE)
)
"""The kinds whose observing hooks on one module share registrations."""

OUT, IN = 0, 1
"""Which side of a module a gradient belongs to (`BackwardCall.got`)."""


def captures(memo: CaptureMemo, values: Sequence[Any]) -> list[PendingSummary | None]:
    return [memo.capture(t) if isinstance(t, torch.Tensor) else None for t in values]


def _is_newest(hooks: dict[int, Callable[..., Any]], handle: RemovableHandle) -> bool:
    return bool(hooks) and next(reversed(hooks)) == handle.id


@dataclass
class AttachedHook:
    """One modscope hook on one module, owning the handles that remove it."""

    hook_id: HookId
    path: str
    spec: HookSpec
    handles: list[RemovableHandle] = field(default_factory=list)
    uses_full_backward: bool = False
    flag_before: bool | None = None
    fired: int = 0
    observer: ModuleObserver | None = None
    """The module's observer whose registrations this observing hook shares."""

    @property
    def kind(self) -> HookKind:
        return self.spec.kind

    @property
    def action(self) -> HookAction:
        return self.spec.action


class ObserverManager(Protocol):
    """What observers use of the `HookManager` (hooks.py) that holds their hooks, said here so
    that the manager imports this module and not the reverse."""

    memo: CaptureMemo
    grads: GradWaiters
    calls: list[BackwardCall]

    def fire(self, hook: AttachedHook, **captured: Any) -> None: ...


class BackwardCall:
    """The gradients of one forward call of an observed module, for its BACKWARD_PRE hook (all
    of the outputs' gradients arrived) and its BACKWARD hook (the inputs' too)."""

    # One per observed module call: slots keep it one object rather than two.
    __slots__ = (
        "arrived",
        "backward",
        "backward_pre",
        "done",
        "grad_input",
        "grad_output",
        "manager",
        "pre_done",
        "waiting_in",
        "waiting_out",
    )

    def __init__(
        self,
        manager: ObserverManager,
        backward_pre: AttachedHook | None,
        backward: AttachedHook | None,
        n_in: int,
        n_out: int,
    ) -> None:
        self.manager = manager
        self.backward_pre = backward_pre
        self.backward = backward
        self.grad_input: list[PendingSummary | None] = [None] * n_in
        self.grad_output: list[PendingSummary | None] = [None] * n_out
        self.waiting_in: set[int] = set()
        self.waiting_out: set[int] = set()
        self.arrived = False
        self.pre_done = backward_pre is None
        self.done = backward is None

    def got(self, side: int, index: int, captured: PendingSummary) -> None:
        self.arrived = True
        if side == OUT:
            self.grad_output[index] = captured
            self.waiting_out.discard(index)
        else:
            self.grad_input[index] = captured
            self.waiting_in.discard(index)
        if self.waiting_out:
            return
        if not self.pre_done:
            self.finish_pre(None)
        if not self.done and not self.waiting_in:
            self.finish(None)

    @property
    def complete(self) -> bool:
        return self.pre_done and self.done

    def finish_pre(self, note: str | None) -> None:
        self.pre_done = True
        assert self.backward_pre is not None
        self.manager.fire(self.backward_pre, grad_output=list(self.grad_output), note=note)

    def finish(self, note: str | None) -> None:
        self.done = True
        assert self.backward is not None
        if self.grad_input:
            note = f"{INPUT_GRAD_NOTE}; {note}" if note else INPUT_GRAD_NOTE
        self.manager.fire(
            self.backward,
            grad_input=list(self.grad_input),
            grad_output=list(self.grad_output),
            note=note,
        )

    def give_up(self, note: str) -> None:
        """After the backward pass: fire what is still owed, saying what never arrived."""
        if not self.pre_done:
            self.finish_pre(note)
        if not self.done:
            self.finish(note)


class GradWaiters:
    """One tensor hook per tensor and iteration, however many `BackwardCall`s wait on its
    gradient: it is captured once and handed to each (`clear` after the iteration)."""

    def __init__(self, memo: CaptureMemo, transient: list[RemovableHandle]) -> None:
        self._memo = memo
        self._transient = transient
        self._waiting: dict[int, tuple[weakref.ref[torch.Tensor], list[Any]]] = {}

    def wait(self, t: torch.Tensor, call: BackwardCall, side: int, index: int) -> None:
        entry = self._waiting.get(id(t))
        if entry is None or entry[0]() is not t:
            waiters: list[Any] = []
            self._waiting[id(t)] = (weakref.ref(t), waiters)
            self._transient.append(t.register_hook(partial(_arrived, self._memo, waiters)))
        else:
            waiters = entry[1]
        waiters.append((call, side, index))

    def clear(self) -> None:
        self._waiting.clear()


def _arrived(memo: CaptureMemo, waiters: list[Any], grad: torch.Tensor) -> None:
    captured = memo.capture(grad)
    for call, side, index in waiters:
        call.got(side, index, captured)


class ModuleObserver:
    """The observing hooks of one module that share its registrations: at most one of each
    kind in `OBSERVED_TOGETHER`."""

    def __init__(
        self, manager: ObserverManager, module: nn.Module, *, compiled: bool = False
    ) -> None:
        self.manager = manager
        self.module = module
        self.compiled = compiled
        """Whether the module runs inside a compiled call (`walk.eager_hook`)."""
        self.hooks: dict[HookKind, AttachedHook] = {}
        self.pre_handle: RemovableHandle | None = None
        self.post_handle: RemovableHandle | None = None

    def can_take(self, kind: HookKind) -> bool:
        """True when a hook of `kind` can share this observer's registration and still run
        where its own would: the slot is free and the hook it shares is the module's newest."""
        if kind in self.hooks:
            return False
        if kind is HookKind.FORWARD_PRE:
            handle, hooks = self.pre_handle, self.module._forward_pre_hooks
        else:
            handle, hooks = self.post_handle, self.module._forward_hooks
        return handle is None or _is_newest(hooks, handle)

    def add(self, hook: AttachedHook) -> None:
        self.hooks[hook.kind] = hook
        if hook.kind is HookKind.FORWARD_PRE:
            if self.pre_handle is None:
                self.pre_handle = self.module.register_forward_pre_hook(
                    eager_hook(self._pre, compiled=self.compiled), with_kwargs=True
                )
            hook.handles.append(self.pre_handle)
        else:
            if self.post_handle is None:
                self.post_handle = self.module.register_forward_hook(
                    eager_hook(self._post, compiled=self.compiled), with_kwargs=True
                )
            hook.handles.append(self.post_handle)

    def drop(self, hook: AttachedHook) -> bool:
        """Take `hook` out, removing what no hook needs any more; True once none is left."""
        del self.hooks[hook.kind]
        hook.handles.clear()
        if hook.kind is HookKind.FORWARD_PRE:
            if self.pre_handle is not None:
                self.pre_handle.remove()
                self.pre_handle = None
        elif self.post_handle is not None and not (self.hooks.keys() - {HookKind.FORWARD_PRE}):
            self.post_handle.remove()
            self.post_handle = None
        return not self.hooks

    # -- what PyTorch calls ----------------------------------------------------------------------

    def _pre(self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> None:
        manager = self.manager
        seen = flatten_tensors(args)
        if kwargs:
            seen += flatten_tensors(list(kwargs.values()))
        manager.fire(self.hooks[HookKind.FORWARD_PRE], args=captures(manager.memo, seen))

    def _post(
        self, module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
    ) -> None:
        manager = self.manager
        outputs = flatten_tensors(output)
        inputs = flatten_tensors(args)
        forward = self.hooks.get(HookKind.FORWARD)
        if forward is not None:
            seen = inputs + flatten_tensors(list(kwargs.values())) if kwargs else inputs
            manager.fire(
                forward,
                args=captures(manager.memo, seen),
                output=captures(manager.memo, outputs),
            )
        backward = self.hooks.get(HookKind.BACKWARD)
        backward_pre = self.hooks.get(HookKind.BACKWARD_PRE)
        if backward is None and backward_pre is None:
            return
        if backward is None:
            inputs = []
        call = BackwardCall(manager, backward_pre, backward, len(inputs), len(outputs))
        grads = manager.grads
        for side, tensors, waiting in (
            (OUT, outputs, call.waiting_out),
            (IN, inputs, call.waiting_in),
        ):
            for i, t in enumerate(tensors):
                if t is not None and t.requires_grad:
                    waiting.add(i)
                    grads.wait(t, call, side, i)
        if call.waiting_out:
            manager.calls.append(call)
