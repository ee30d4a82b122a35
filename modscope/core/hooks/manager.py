"""Attaching and detaching modscope's module hooks and recording what they see."""

from __future__ import annotations

import itertools
import warnings
from collections.abc import Callable, Iterable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

import torch
from torch import nn
from torch.utils.hooks import RemovableHandle

# Observing gradients through a module-level full backward hook wraps inputs and outputs in
# BackwardHookFunction nodes: an in-place op after the module then raises (PyTorch #61519) and
# MultiheadAttention takes another path (`query is key` stops holding). Tensor hooks do neither.
# The notes that say so live in a torch-free module, so that the UI shows the same words.
from modscope.core.contract.hook_notes import FULL_HOOK_COST, LEGACY_NOTE, backward_conflict
from modscope.core.contract.hook_spec import (
    MODSCOPE_REGISTRY,
    HookAction,
    HookId,
    HookKind,
    HookSpec,
    HookSpecError,
)
from modscope.core.contract.steps import BreakEvent, HookEvent, Phase
from modscope.core.contract.tensors import TensorSummary
from modscope.core.filled import filled, plain_frozen
from modscope.core.gc_pause import collector_on_new_objects, collector_paused
from modscope.core.hooks.captures import CaptureMemo
from modscope.core.hooks.observers import (
    OBSERVED_TOGETHER,
    AttachedHook,
    BackwardCall,
    GradWaiters,
    ModuleObserver,
    captures,
)
from modscope.core.model.walk import (
    FULLGRAPH_WHY,
    compiled_region,
    did_you_mean,
    distinct_modules,
    eager_hook,
    hook_sites,
    module_at,
    refuses_hooks,
    refusing_phrase,
    sealed,
    sealed_paths,
)
from modscope.core.stats.summary import PendingSummary, flatten_tensors, resolve

ALL_OBSERVED = (HookKind.FORWARD_PRE, HookKind.FORWARD, HookKind.BACKWARD, HookKind.BACKWARD_PRE)


def all_hooks_specs() -> list[HookSpec]:
    """`--hooks all`: observing forward-pre, forward, backward and backward-pre on every module."""
    return [HookSpec("*", kind) for kind in ALL_OBSERVED]


@dataclass(slots=True)
class EventDraft:
    """A hook firing as recorded in the hook: pending summaries, resolved later in a batch."""

    step: int
    phase: Phase
    module: str
    kind: HookKind
    action: HookAction
    args: list[PendingSummary | None] | None = None
    output: list[PendingSummary | None] | None = None
    grad_input: list[PendingSummary | None] | None = None
    grad_output: list[PendingSummary | None] | None = None
    note: str | None = None


def events_of(drafts: Sequence[EventDraft], numbers: Iterable[int]) -> list[HookEvent]:
    """Hook firings as events: every pending summary of every draft resolved in one batch,
    each event numbered from `numbers`.

    With the cyclic collector held (`collector_paused`): nothing here is cyclic garbage, and
    the tens of thousands of events and summaries of a phase with hooks on every module
    otherwise start full collections over every object the model holds, which on a model of
    thousands of modules would take most of the time this takes."""
    with collector_paused():
        return _events_of(drafts, numbers)


def _events_of(drafts: Sequence[EventDraft], numbers: Iterable[int]) -> list[HookEvent]:
    flat: list[PendingSummary | None] = []
    for d in drafts:
        for seen in (d.args, d.output, d.grad_input, d.grad_output):
            if seen:
                flat += seen
    summaries = resolve(flat)
    at = 0

    def taken(seen: list[PendingSummary | None] | None) -> tuple[TensorSummary | None, ...] | None:
        nonlocal at
        if seen is None:
            return None
        at += len(seen)
        return tuple(summaries[at - len(seen) : at])

    # Without HookEvent's frozen `__init__` (`core.filled`): this runs once per firing, tens
    # of thousands of times a phase with hooks on every module.
    return [
        _new_event(
            {
                "seq": seq,
                "step": d.step,
                "phase": d.phase,
                "module": d.module,
                "kind": d.kind,
                "action": d.action,
                "args": taken(d.args),
                "output": taken(d.output),
                "grad_input": taken(d.grad_input),
                "grad_output": taken(d.grad_output),
                "note": d.note,
            }
        )
        for d, seq in zip(drafts, numbers, strict=False)
    ]


if plain_frozen(HookEvent):

    def _new_event(values: dict[str, Any]) -> HookEvent:
        return filled(HookEvent, values)

else:  # pragma: no cover - the type changed shape; stay correct, only slower

    def _new_event(values: dict[str, Any]) -> HookEvent:
        return HookEvent(**values)


class IterationAbandoned(Exception):
    """Raised inside a paused hook when the user quits: unwinds the iteration."""


class BreakStop(Exception):
    """A `--break` condition tripped and nobody waits for the user (`Session(on_break=None)`,
    the headless default): raised where it tripped, it unwinds the iteration like
    `IterationAbandoned` (the partial iteration dropped, every transient hook removed), then
    leaves `Session.run_phase()` / `run_iteration()` with the break and the hook events the
    partial iteration recorded. A sibling of `IterationAbandoned`, not a subclass: a caller
    that catches an abandoned iteration must not lose a break."""

    def __init__(self, event: BreakEvent) -> None:
        super().__init__(event.message or event.condition)
        self.event = event
        self.events: tuple[HookEvent, ...] = ()
        """The hook events of the partial iteration, filled in by the session as it unwinds."""


def _map_tensors(value: Any, fn: Callable[[torch.Tensor], torch.Tensor]) -> Any:
    if isinstance(value, torch.Tensor):
        return fn(value)
    if isinstance(value, tuple) and hasattr(value, "_fields"):
        return type(value)(*(_map_tensors(v, fn) for v in value))
    if isinstance(value, tuple | list):
        return type(value)(_map_tensors(v, fn) for v in value)
    if isinstance(value, dict):
        return type(value)((k, _map_tensors(v, fn)) for k, v in value.items())
    return value


class HookManager:
    """The hooks modscope attached to one model, and the per-iteration tensor hooks they add.

    `emit` receives an `EventDraft` each time a hook fires; `context` says the current step and
    phase; `pause` (the app's) blocks a `pause` hook until the user continues, or raises
    `IterationAbandoned`. Modules PyTorch refuses hooks on (ScriptModules) are skipped by `*`
    and refused by name; `skipped` lists the outermost ones the last `attach` left out.
    """

    def __init__(
        self,
        model: nn.Module,
        *,
        emit: Callable[[EventDraft], None],
        context: Callable[[], tuple[int, Phase]],
        pause: Callable[[EventDraft], None] | None = None,
    ) -> None:
        self.model = model
        self.emit = emit
        self.context = context
        self.pause = pause
        self.attached: dict[HookId, AttachedHook] = {}
        self._ids = itertools.count(1)
        self._transient: list[RemovableHandle] = []
        self.calls: list[BackwardCall] = []
        """Observed calls whose gradients are awaited this iteration (`end_backward`)."""
        self.skipped: tuple[str, ...] = ()
        self.sealed: tuple[str, ...] = ()
        """The outermost modules inside fullgraph compiled calls the last `attach` left out."""
        self._legacy_hooks = 0
        """How many of `attached` are legacy backward hooks (asked before every phase)."""
        self.memo = CaptureMemo()
        """Captures shared by the hooks within an iteration (cleared by `end_iteration`)."""
        self.grads = GradWaiters(self.memo, self._transient)
        """The gradients observing hooks wait for this iteration, one tensor hook each."""
        self._observers: dict[str, ModuleObserver] = {}
        """Each module's newest observer, which the next observing hook may join."""

    # -- attaching ---------------------------------------------------------------------------

    def resolve_modules(self, pattern: str) -> list[tuple[str, nn.Module]]:
        """The modules a spec's MODULE names: a dotted path, `""`/`.` the root, `*` every one."""
        if pattern == "*":
            return distinct_modules(self.model)
        if pattern in ("", "."):
            return [("", self.model)]
        found = module_at(self.model, pattern)
        if found is None:
            hint = did_you_mean(self.model, pattern)
            raise HookSpecError(f"no module {pattern!r} in the model{hint}")
        return [found]

    def attach(self, spec: HookSpec) -> list[AttachedHook]:
        """Attach `spec` to each module it names; returns the hooks added."""
        if spec.action is HookAction.PAUSE and self.pause is None:
            raise HookSpecError("the pause action works only in the app (modscope SCRIPT)")
        added: list[AttachedHook] = []
        targets = self.resolve_modules(spec.module)
        refused = [path for path, module in targets if refuses_hooks(module)]
        if refused and spec.module != "*":
            raise HookSpecError(
                f"{refused[0] or 'the model'} is a ScriptModule: PyTorch refuses hooks on "
                "ScriptModules (torch.jit.script)"
            )
        self.skipped = tuple(p for p in refused if not any(p.startswith(q + ".") for q in refused))
        compiled = compiled_region(self.model)
        closed = [path for path, module in targets if sealed(module, compiled)]
        if closed and spec.module != "*":
            raise HookSpecError(
                f"{closed[0] or 'the model'} runs inside a torch.compile(fullgraph=True) call: "
                + FULLGRAPH_WHY
            )
        self.sealed = tuple(sealed_paths(self.model, compiled)) if closed else ()
        try:
            for path, module, inside in hook_sites(targets, compiled):
                hook = AttachedHook(HookId(MODSCOPE_REGISTRY, next(self._ids)), path, spec)
                self._register(hook, module, compiled=inside)
                self.attached[hook.hook_id] = hook
                self._legacy_hooks += hook.kind is HookKind.LEGACY_BACKWARD
                added.append(hook)
        except BaseException:
            for hook in added:
                self.detach(hook.hook_id)
            raise
        return added

    def skipped_note(self) -> str | None:
        """`skipped 1 ScriptModule (scripted): ...` after an `attach` that left some out."""
        notes = []
        if self.skipped:
            notes.append(
                f"skipped {refusing_phrase(list(self.skipped))}: PyTorch refuses hooks on them"
            )
        if self.sealed:
            shown = ", ".join(p or "the model" for p in self.sealed[:4])
            notes.append(
                f"skipped the modules in fullgraph compiled calls ({shown}): {FULLGRAPH_WHY}"
            )
        return "; ".join(notes) or None

    def _register(self, hook: AttachedHook, module: nn.Module, *, compiled: bool) -> None:
        kind, action = hook.kind, hook.action
        if kind in OBSERVED_TOGETHER and action in (HookAction.OBSERVE, HookAction.PAUSE):
            observer = self._observers.get(hook.path)
            if observer is None or observer.module is not module or not observer.can_take(kind):
                observer = ModuleObserver(self, module, compiled=compiled)
                self._observers[hook.path] = observer
            observer.add(hook)
            hook.observer = observer
        elif kind is HookKind.FORWARD_PRE:
            fn = eager_hook(self._forward_pre(hook), compiled=compiled)
            hook.handles.append(module.register_forward_pre_hook(fn, with_kwargs=True))
        elif kind is HookKind.FORWARD:
            fn = eager_hook(self._forward(hook), compiled=compiled)
            hook.handles.append(module.register_forward_hook(fn, with_kwargs=True))
        elif kind is HookKind.LEGACY_BACKWARD:
            if module._backward_hooks and module._is_full_backward_hook:
                raise HookSpecError(backward_conflict(kind, hook.path or "the root"))
            hook.flag_before = module._is_full_backward_hook
            hook.handles.append(module.register_backward_hook(self._legacy(hook)))
        elif kind is HookKind.BACKWARD:
            if module._backward_hooks and module._is_full_backward_hook is False:
                raise HookSpecError(backward_conflict(kind, hook.path or "the root"))
            hook.uses_full_backward = True
            hook.flag_before = module._is_full_backward_hook
            hook.handles.append(module.register_full_backward_hook(self._change_grad(hook)))
        else:
            hook.uses_full_backward = True
            hook.flag_before = module._is_full_backward_hook
            hook.handles.append(module.register_full_backward_pre_hook(self._change_grad(hook)))

    def detach(self, hook_id: HookId) -> None:
        """Remove a modscope hook and restore its module exactly as it was."""
        hook = self.attached.pop(hook_id, None)
        if hook is None:
            raise KeyError(f"no modscope hook {hook_id!r}")
        if hook.observer is not None:
            if hook.observer.drop(hook) and self._observers.get(hook.path) is hook.observer:
                del self._observers[hook.path]
            hook.observer = None
        for handle in hook.handles:
            handle.remove()
        hook.handles.clear()
        self._legacy_hooks -= hook.kind is HookKind.LEGACY_BACKWARD
        if hook.kind is HookKind.LEGACY_BACKWARD or hook.uses_full_backward:
            module = self.model.get_submodule(hook.path) if hook.path else self.model
            still_ours = any(
                other.path == hook.path
                and (other.uses_full_backward or other.kind is HookKind.LEGACY_BACKWARD)
                for other in self.attached.values()
            )
            # handle.remove() leaves _is_full_backward_hook set, and a later legacy hook on the
            # module then raises: put the flag back as it was before modscope touched it.
            if not still_ours and not module._backward_hooks:
                module._is_full_backward_hook = hook.flag_before

    def detach_all(self) -> None:
        """Remove every modscope hook (on exit, on reload, on error)."""
        self.end_iteration()
        for hook_id in list(self.attached):
            self.detach(hook_id)

    def end_backward(self) -> None:
        """After `loss.backward()`: report gradients that never arrived, drop tensor hooks."""
        for call in self.calls:
            if call.arrived and not call.complete:
                call.give_up("some gradients never arrived (inputs not used by the loss)")
        self.end_iteration()

    def end_iteration(self) -> None:
        """Remove the tensor hooks added during this iteration (also when it failed)."""
        for handle in self._transient:
            handle.remove()
        self._transient.clear()
        self.calls.clear()
        self.grads.clear()
        self.memo.clear()

    @property
    def has_legacy(self) -> bool:
        """True while a legacy backward hook is attached (PyTorch warns at every forward)."""
        return self._legacy_hooks > 0

    @contextmanager
    def running_phase(self) -> Iterator[None]:
        """What a phase runs inside while modscope hooks are attached: PyTorch's warning about
        legacy backward hooks silenced (`quiet_legacy_warning`), and the objects older than
        the phase kept out of the cyclic collector's scans (`gc_pause.collector_on_new_objects`)."""
        if not self.attached:
            yield
            return
        with self.quiet_legacy_warning(), collector_on_new_objects():
            yield

    @contextmanager
    def quiet_legacy_warning(self) -> Iterator[None]:
        """Silence PyTorch's warning about legacy backward hooks while a phase runs: the hook's
        event carries LEGACY_NOTE instead. The filter is removed again afterwards (it is
        process-wide), and only added while a legacy hook is attached."""
        if not self.has_legacy:
            yield
            return
        with warnings.catch_warnings():
            warnings.filterwarnings(
                "ignore", message="Using a non-full backward hook", category=FutureWarning
            )
            yield

    # -- the hooks themselves ----------------------------------------------------------------

    def fire(self, hook: AttachedHook, **captured: Any) -> None:
        """Hand one firing of `hook`, with what it saw, to `emit`; a `pause` hook then
        waits on `pause`. Observers fire the hooks they hold through this too."""
        hook.fired += 1
        step, phase = self.context()
        draft = EventDraft(step, phase, hook.path, hook.kind, hook.action, **captured)
        self.emit(draft)
        if hook.action is HookAction.PAUSE and self.pause is not None:
            self.pause(draft)

    def _scaled(self, hook: AttachedHook) -> Callable[[torch.Tensor], torch.Tensor]:
        if hook.action is HookAction.ZERO:
            return torch.zeros_like
        factor = hook.spec.factor if hook.spec.factor is not None else 1.0
        return lambda t: t * factor

    def _changes(self, hook: AttachedHook) -> bool:
        return hook.action in (HookAction.SCALE, HookAction.ZERO)

    # Forward-pre and forward hooks that change what they see (`scale`, `zero`); the observing
    # ones go through a `ModuleObserver`.

    def _forward_pre(self, hook: AttachedHook) -> Callable[..., Any]:
        fn = self._scaled(hook)

        def forward_pre(module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
            seen = flatten_tensors(args) + flatten_tensors(list(kwargs.values()))
            self.fire(hook, args=captures(self.memo, seen))
            return _map_tensors(args, fn), _map_tensors(kwargs, fn)

        return forward_pre

    def _forward(self, hook: AttachedHook) -> Callable[..., Any]:
        fn = self._scaled(hook)

        def forward(
            module: nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any], output: Any
        ) -> Any:
            seen = flatten_tensors(args) + flatten_tensors(list(kwargs.values()))
            output_seen = flatten_tensors(output)
            self.fire(hook, args=captures(self.memo, seen), output=captures(self.memo, output_seen))
            return _map_tensors(output, fn)

        return forward

    def _fire_grads(self, hook: AttachedHook, grad_input: Any, grad_output: Any, note: str) -> None:
        """A module-level backward hook fired: what it saw, with the note that says which kind."""
        grad_in = captures(self.memo, list(grad_input))
        grad_out = captures(self.memo, list(grad_output))
        self.fire(hook, grad_input=grad_in, grad_output=grad_out, note=note)

    def _legacy(self, hook: AttachedHook) -> Callable[..., Any]:
        def legacy(module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
            self._fire_grads(hook, grad_input, grad_output, LEGACY_NOTE)
            if self._changes(hook):
                fn = self._scaled(hook)
                return tuple(fn(g) if g is not None else None for g in grad_input)
            return None

        return legacy

    def _change_grad(self, hook: AttachedHook) -> Callable[..., Any]:
        fn = self._scaled(hook)
        if hook.kind is HookKind.BACKWARD:

            def backward(module: nn.Module, grad_input: Any, grad_output: Any) -> Any:
                self._fire_grads(hook, grad_input, grad_output, FULL_HOOK_COST)
                return tuple(fn(g) if g is not None else None for g in grad_input)

            return backward

        def backward_pre(module: nn.Module, grad_output: Any) -> Any:
            grads = captures(self.memo, list(grad_output))
            self.fire(hook, grad_output=grads, note=FULL_HOOK_COST)
            return tuple(fn(g) if g is not None else None for g in grad_output)

        return backward_pre
