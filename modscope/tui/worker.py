"""The session worker: one thread that owns the Session and does every piece of torch work.

The app submits commands; the worker runs them in order in its thread and appends frozen
updates (`modscope.tui.updates`) to an outbox. It calls `wake()` only when the outbox goes
from empty to non-empty, and the app drains everything at once, so a burst of iterations, prints
or hook events costs the UI one message. Queries (hooks, values, newly visible tensors) jump
ahead of queued steps. Nothing but this thread touches the model.
"""

from __future__ import annotations

import os
import threading
import time
from collections import deque
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass, replace
from types import MappingProxyType
from typing import Any

import torch

from modscope.core.errors import ScriptError, user_error
from modscope.core.hook_listing import detach_foreign, list_hooks
from modscope.core.hooks import EventDraft, HookSpec, HookSpecError
from modscope.core.inventory import fold_runs
from modscope.core.loader import PrintSink
from modscope.core.pause import PauseGate, Resume
from modscope.core.session import Session
from modscope.core.summary import capture, resolve
from modscope.core.types import (
    Finding,
    HookAction,
    HookEvent,
    HookInfo,
    HookKind,
    Phase,
    PhaseResult,
    TensorSummary,
)
from modscope.tui import updates as up
from modscope.tui.fallback_findings import fallback_findings, step_findings

try:  # the doctor is optional: findings then come from the inventory alone
    from modscope.core.doctor import StepWatcher
except ImportError:  # pragma: no cover - depends on what is installed
    StepWatcher = None

PauseHandler = Callable[[EventDraft], None]
SessionFactory = Callable[[PrintSink, PauseHandler], Session]

FOLD_MIN = 3
"""Runs of at least this many identical numbered siblings fold into one tree node."""

SUMMARIZE_ALL_LIMIT = 4096
"""Models with at most this many parameters and buffers get every summary after each command;
bigger ones only those the UI shows (DESIGN section 5: statistics only for what is shown)."""

VALUES_PAGE_LIMIT = 4096


# -- commands ---------------------------------------------------------------------------------


@dataclass(frozen=True)
class Step:
    """One whole iteration (or the rest of a partial one)."""


@dataclass(frozen=True)
class NextPhase:
    """The next phase only."""


@dataclass(frozen=True)
class ToggleTraining:
    """Switch the whole model between train and eval mode."""


@dataclass(frozen=True)
class Reload:
    """Close the session (every hook removed) and load the script again."""


@dataclass(frozen=True)
class ListHooks:
    path: str


@dataclass(frozen=True)
class ReadValues:
    path: str
    offset: int
    count: int
    grad: bool = False


@dataclass(frozen=True)
class Watch:
    """Tensors the UI now shows: keep their summaries fresh."""

    paths: tuple[str, ...]


@dataclass(frozen=True)
class AttachHook:
    """Attach a modscope hook (the hook dialog). A legacy backward hook comes with an observing
    backward hook on the same module, so that both gradients are shown side by side."""

    module: str
    kind: HookKind
    action: HookAction = HookAction.OBSERVE
    factor: float | None = None


@dataclass(frozen=True)
class DetachHook:
    """Detach a hook the hooks pane lists: modscope's, or (the user confirmed) another's."""

    hook: HookInfo


Command = (
    Step
    | NextPhase
    | ToggleTraining
    | Reload
    | ListHooks
    | ReadValues
    | Watch
    | AttachHook
    | DetachHook
)
# Queries run before queued steps, and also while a pause hook holds an iteration: the user
# looks around, attaches and detaches hooks at a breakpoint.
_QUERIES = (ListHooks, ReadValues, Watch, AttachHook, DetachHook)
_STEPS = (Step, NextPhase)


class _Continue:
    """The next iteration of a continuous run (not a submitted command)."""


def default_factory(script: str, model_name: str | None = None) -> SessionFactory:
    """The factory `modscope SCRIPT` uses: load `script` with the app's sink and pause handler."""

    def load(sink: PrintSink, pause: PauseHandler) -> Session:
        return Session.load(script, model_name=model_name, sink=sink, pause=pause)

    return load


class SessionWorker:
    """Runs a Session in one thread; the UI talks to it through `submit` and `drain`."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        script: str,
        hook_specs: Sequence[str] = (),
        wake: Callable[[], None] = lambda: None,
    ) -> None:
        self.script = script
        self.script_name = os.path.basename(script)
        self._factory = factory
        self._hook_specs = tuple(hook_specs)
        self._wake = wake
        self._cond = threading.Condition()
        self._commands: deque[Command] = deque()
        self._queries: deque[Command] = deque()
        self._outbox: list[up.Update] = []
        self._running = False
        self._stopping = False
        self._busy = True  # loading, until the first command completes
        self._completed = 0
        self._gate = PauseGate(on_pause=self._on_pause)
        self._paused_at: str | None = None
        self._decided = False  # the pause being served got its answer (continue, quit, ...)
        self._through: str | None = None  # "phase" / "iteration": what s / n at a pause run to
        self._ticketed = False  # the command running was submitted (not a continuous run's)
        self._session_status = up.SessionStatus(self.script_name)
        self._thread = threading.Thread(target=self._main, name="modscope-session", daemon=True)
        # Worker-thread state from here on.
        self._session: Session | None = None
        self._generation = 0
        self._version = 0
        self._watched: set[str] = set()
        self._tensor_paths: tuple[str, ...] = ()
        self._fingerprint: tuple[int, ...] = ()
        self._watcher: Any = None
        self._findings: dict[tuple[str, str], Finding] = {}
        self._layout: up.ModelLayout | None = None
        self._hooks_path: str | None = None

    # -- the UI side ---------------------------------------------------------------------------

    def start(self) -> None:
        """Start the thread; it loads the script first (that counts as one submitted command)."""
        self._thread.start()

    def submit(self, command: Command) -> int:
        """Queue a command; returns how many earlier steps it dropped (a reload drops them)."""
        with self._cond:
            dropped = 0
            if isinstance(command, Reload):
                dropped = len(self._commands)
                self._commands.clear()
                self._completed += dropped
                self._running = False
                # A paused iteration is abandoned (it unwinds cleanly); the reload reopens.
                self._decided = True
                self._gate.abandon()
            (self._queries if isinstance(command, _QUERIES) else self._commands).append(command)
            self._cond.notify_all()
        if dropped or isinstance(command, _STEPS):
            self._post(up.StatusChanged(self.status()))
        return dropped

    def set_running(self, running: bool) -> None:
        """Run iterations continuously until `set_running(False)` or an error."""
        with self._cond:
            self._running = running
            self._cond.notify_all()
        self._post(up.StatusChanged(self.status()))

    def resume(self) -> bool:
        """`c` at a pause hook: on to the next pause, or the end of the request."""
        return self._answer(Resume.CONTINUE)

    def run_through(self, whole_iteration: bool) -> bool:
        """`s` / `n` at a pause hook: on to the end of the iteration / phase, past any pause."""
        return self._answer(Resume.RUN_THROUGH, "iteration" if whole_iteration else "phase")

    def _answer(self, how: Resume, through: str | None = None) -> bool:
        """Answer the pause being served; False when nothing is paused."""
        with self._cond:
            if self._paused_at is None or not self._gate.resume(how):
                return False
            self._through = through
            self._decided = True
            self._cond.notify_all()
        return True

    @property
    def paused(self) -> bool:
        """True while a pause hook holds the iteration."""
        with self._cond:
            return self._paused_at is not None

    def stop(self) -> None:
        """Ask the thread to close the session and end; a paused iteration is abandoned at once
        (the pause hook raises, the session unwinds it), and so is any pause still to come."""
        with self._cond:
            self._stopping = True
            self._running = False
            self._gate.abandon()
            self._cond.notify_all()

    def join(self, timeout: float | None = None) -> bool:
        """Wait for the thread to end; True when it did."""
        if self._thread.is_alive():
            self._thread.join(timeout)
        return not self._thread.is_alive()

    def drain(self) -> list[up.Update]:
        """Everything the worker posted since the last drain, in order."""
        with self._cond:
            items, self._outbox = self._outbox, []
        return items

    @property
    def queued(self) -> int:
        with self._cond:
            return len(self._commands)

    @property
    def running(self) -> bool:
        """True while iterations run continuously."""
        with self._cond:
            return self._running

    # -- posting -------------------------------------------------------------------------------

    def _post(self, update: up.Update) -> None:
        with self._cond:
            was_empty = not self._outbox
            self._outbox.append(update)
        if was_empty:
            self._wake()

    def _sink(self, line: str) -> None:
        self._post(up.Printed(line))

    def status(self) -> up.SessionStatus:
        """The status as of now; callable from either thread.

        The session's own facts come from the last snapshot the worker thread took (only that
        thread reads the session); the queue and run flags are read under the lock.
        """
        with self._cond:
            # At a pause the worker waits for the user: idle, its command as good as done.
            paused = self._paused_at is not None
            return replace(
                self._session_status,
                queued=len(self._commands),
                running=self._running,
                busy=self._busy and not paused,
                completed=self._completed + (1 if paused and self._ticketed else 0),
                paused_at=self._paused_at,
            )

    def _refresh_status(self) -> None:
        """Take a new snapshot of the session's facts (worker thread only)."""
        s = self._session
        if s is None:
            fresh = up.SessionStatus(self.script_name)
        else:
            fresh = up.SessionStatus(
                script=self.script_name,
                loaded=True,
                step=s.step,
                next_phase=s.next_phase,
                in_iteration=s.in_iteration,
                phases=s.phases(),
                training=s.training,
                last_loss=s.last_loss,
                last_output=s.last_output,
                tags=_tags(s),
                hooks=len(s.hooks.attached),
            )
        with self._cond:
            self._session_status = fresh

    # -- the thread ----------------------------------------------------------------------------

    def _main(self) -> None:
        try:
            self._guarded(self._load)
            self._finish_command()
            while (command := self._next()) is not None:
                ticketed = not isinstance(command, _Continue)
                with self._cond:
                    self._busy = True
                    self._ticketed = ticketed
                if isinstance(command, (*_STEPS, _Continue)):
                    self._post(up.StatusChanged(self.status()))
                self._guarded(self._execute, command)
                if ticketed:
                    self._finish_command()
                else:
                    self._refresh_status()
                    with self._cond:
                        self._busy = False
                    self._post(up.StatusChanged(self.status()))
        finally:
            self._close()

    def _finish_command(self) -> None:
        self._refresh_status()
        with self._cond:
            self._completed += 1
            self._busy = False
        self._post(up.StatusChanged(self.status()))

    def _next(self) -> Command | _Continue | None:
        with self._cond:
            while True:
                if self._stopping:
                    return None
                if self._queries:
                    return self._queries.popleft()
                if self._commands:
                    return self._commands.popleft()
                if self._running and self._session is not None:
                    return _Continue()
                self._cond.wait()

    def _guarded(self, fn: Callable[..., None], *args: Any) -> None:
        # A bug here must not kill the thread: the UI would wait forever.
        try:
            fn(*args)
        except Exception as exc:
            with self._cond:
                self._running = False
            self._post(up.Notice(f"modscope internal error: {type(exc).__name__}: {exc}", "error"))

    def _execute(self, command: Command | _Continue) -> None:
        if isinstance(command, Reload):
            self._close()
            self._gate.reopen()
            self._load()
            return
        s = self._session
        if s is None:
            return
        if isinstance(command, Step | _Continue):
            self._after(self._run_request(s, whole_iteration=True))
        elif isinstance(command, NextPhase):
            self._after(self._run_request(s, whole_iteration=False))
        elif isinstance(command, ToggleTraining):
            s.set_training(not s.training)
            self._after_change()
        elif isinstance(command, ListHooks):
            self._list_hooks(s, command.path)
        elif isinstance(command, ReadValues):
            self._read_values(s, command)
        elif isinstance(command, Watch):
            self._watch(command.paths)
        elif isinstance(command, AttachHook):
            spec = HookSpec(command.module, command.kind, command.action, command.factor)
            self._attach(s, spec, source="h")
        elif isinstance(command, DetachHook):
            self._detach(s, command.hook)

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> None:
        self._generation += 1
        try:
            session = self._factory(self._sink, self._gate)
        except ScriptError as exc:
            self._post(up.LoadFailed(exc.error))
            return
        except Exception as exc:  # a factory that is not Session.load
            self._post(up.LoadFailed(user_error(exc, phase=Phase.LOAD, script=self.script)))
            return
        loaded_at = time.perf_counter()
        self._session = session
        self._version += 1
        self._watched = set()
        self._findings = {}
        for text in self._hook_specs:
            try:
                spec = HookSpec.parse(text)
            except HookSpecError as exc:
                self._post(up.Notice(f"--hook: {exc}", "error"))
                continue
            self._attach(session, spec, source="--hook", relist=False)
        layout = self._make_layout(session)
        self._post(up.Loaded(layout, tuple(session.notes()), loaded_at))
        self._summarize(record=None, baseline=True)
        self._start_doctor(session, layout)

    def _make_layout(self, session: Session) -> up.ModelLayout:
        inv = session.inventory()
        modules = {m.path: m for m in inv.modules}
        tensors = {t.path: t for m in inv.modules for t in (*m.parameters, *m.buffers)}
        unregistered: dict[str, list[Any]] = {}
        for u in inv.unregistered:
            unregistered.setdefault(u.owner, []).append(u)
        folds: dict[str, tuple[tuple[int, int], ...]] = {}
        for m in inv.modules:
            if len(m.children) >= FOLD_MIN:
                kids = [modules[c] for c in m.children if c in modules]
                runs = tuple(
                    (r.start, r.count) for r in fold_runs(kids, inv) if r.count >= FOLD_MIN
                )
                if runs:
                    folds[m.path] = runs
        self._tensor_paths = tuple(tensors)
        self._fingerprint = _fingerprint(session.model)
        self._layout = up.ModelLayout(
            script=self.script_name,
            model_name=session.script.model_name,
            inventory=inv,
            modules=MappingProxyType(modules),
            tensors=MappingProxyType(tensors),
            unregistered=MappingProxyType({k: tuple(v) for k, v in unregistered.items()}),
            folds=MappingProxyType(folds),
            generation=self._generation,
        )
        return self._layout

    def _close(self) -> None:
        s, self._session = self._session, None
        self._paused_at = None
        if s is not None:
            try:
                s.close()
            except Exception as exc:
                self._post(up.Notice(f"closing the session: {exc}", "error"))

    # -- stepping ------------------------------------------------------------------------------

    def _after(self, result: PhaseResult) -> None:
        if result.events:
            self._post(up.HookEventsSeen(result.events))
        self._post(
            up.PhaseDone(result.step, result.phase, result.record, result.error, result.abandoned)
        )
        if result.error is not None or result.abandoned:
            with self._cond:
                self._running = False
        self._after_change(result)

    def _after_change(self, result: PhaseResult | None = None) -> None:
        s = self._session
        assert s is not None
        self._version += 1
        fingerprint = _fingerprint(s.model)
        if fingerprint != self._fingerprint:
            self._post(up.LayoutChanged(self._make_layout(s)))
        record = result.record if result is not None else None
        self._summarize(record=record)
        if record is not None:
            self._step_findings(record)
        if self._hooks_path is not None:
            self._list_hooks(s, self._hooks_path)

    def _run_request(self, s: Session, *, whole_iteration: bool) -> PhaseResult:
        """`s` (the rest of the iteration) or `n` (one phase), one phase at a time, so that
        `s` / `n` pressed at a pause hook can widen or narrow what runs."""
        events: list[HookEvent] = []
        while True:
            result = s.run_phase()
            events.extend(result.events)
            with self._cond:
                through, self._through = self._through, None
            if through == "phase":  # `n` at a pause: this phase was the last one to run
                self._gate.request_ended()
                whole_iteration = False
            elif through == "iteration":  # `s` at a pause: on to the end, pauses skipped
                whole_iteration = True
            if result.record or result.error or result.abandoned or not whole_iteration:
                break
        self._gate.request_ended()
        return replace(result, events=tuple(events))

    def _on_pause(self, draft: EventDraft) -> None:
        """A `pause` hook fired (worker thread, inside the hook): show what arrived, then
        serve queries until the user answers. The gate itself then goes on, or raises
        `IterationAbandoned` on quit or reload, and the session unwinds the iteration."""
        event = _event_of(draft)
        with self._cond:
            self._paused_at = f"{draft.module or '(root)'} ({draft.kind.value})"
            self._decided = self._stopping
        self._refresh_status()
        self._post(up.Paused(event))
        self._post(up.StatusChanged(self.status()))
        while True:
            with self._cond:
                while not (self._queries or self._decided or self._stopping):
                    self._cond.wait()
                if self._decided or self._stopping:
                    self._paused_at = None
                    break
                query = self._queries.popleft()
            self._guarded(self._execute, query)
            self._refresh_status()
            with self._cond:
                self._completed += 1
            self._post(up.StatusChanged(self.status()))
        self._post(up.StatusChanged(self.status()))

    # -- hooks ---------------------------------------------------------------------------------

    def _attach(self, s: Session, spec: HookSpec, *, source: str, relist: bool = True) -> None:
        """Attach `spec`, saying what happened in the log; errors (a bad module, PyTorch
        refusing a legacy hook beside a full one) become notices, never a crash."""
        specs = [spec]
        if spec.kind is HookKind.LEGACY_BACKWARD and not any(
            h.path == spec.module and h.kind is HookKind.BACKWARD for h in s.hooks.attached.values()
        ):
            specs.append(HookSpec(spec.module, HookKind.BACKWARD))
        for i, one in enumerate(specs):
            try:
                added = s.attach(one)
            except (HookSpecError, RuntimeError, ValueError) as exc:
                self._post(up.Notice(f"{source}: {one}: {exc}", "error"))
                break
            where = f"{len(added):,} modules" if len(added) != 1 else (one.module or "the root")
            why = " (beside the legacy hook, to compare)" if i else ""
            self._post(up.Notice(f"attached {one} on {where}{why}"))
        if relist:
            self._hooks_changed(s)

    def _detach(self, s: Session, hook: HookInfo) -> None:
        what = hook.action or f"{hook.kind} {hook.qualname}"
        try:
            if hook.owner == "modscope":
                s.detach(hook.hook_id)
            else:
                detach_foreign(s.model, hook)
        except (KeyError, AttributeError, ValueError) as exc:
            self._post(up.Notice(f"detaching {what}: already gone ({exc})", "warning"))
        else:
            owner = "" if hook.owner == "modscope" else f" ({hook.owner}'s)"
            self._post(up.Notice(f"detached {what}{owner} from {hook.module or 'the root'}"))
        self._hooks_changed(s)

    def _hooks_changed(self, s: Session) -> None:
        self._refresh_status()
        self._post(up.StatusChanged(self.status()))
        if self._hooks_path is not None:
            self._list_hooks(s, self._hooks_path)

    # -- summaries -----------------------------------------------------------------------------

    def _summarize(self, *, record: Any, baseline: bool = False) -> None:
        """Post this version's summaries: the record's, plus what is shown and not in it."""
        s = self._session
        assert s is not None
        everything = len(self._tensor_paths) <= SUMMARIZE_ALL_LIMIT
        wanted = self._tensor_paths if everything else tuple(self._watched)
        summaries: dict[str, TensorSummary] = dict(record.state) if record is not None else {}
        grads: dict[str, TensorSummary | None] = dict(record.grads) if record is not None else {}
        missing = [p for p in wanted if p not in summaries]
        fresh, fresh_grads = self._summaries_of(s, missing, with_grads=record is None)
        summaries.update(fresh)
        grads.update(fresh_grads)
        self._post(
            up.TensorsSummarized(
                self._version, summaries, grads, replace=True, baseline=baseline and everything
            )
        )

    def _watch(self, paths: Iterable[str]) -> None:
        new = [p for p in paths if p not in self._watched]
        self._watched.update(new)
        if len(self._tensor_paths) <= SUMMARIZE_ALL_LIMIT or not new or self._session is None:
            return
        fresh, grads = self._summaries_of(self._session, new, with_grads=True)
        self._post(up.TensorsSummarized(self._version, fresh, grads, replace=False))

    @staticmethod
    def _summaries_of(
        s: Session, paths: Sequence[str], *, with_grads: bool
    ) -> tuple[dict[str, TensorSummary], dict[str, TensorSummary | None]]:
        found: list[tuple[str, torch.Tensor]] = []
        for path in paths:
            t = _tensor_at(s.model, path)
            if t is not None:
                found.append((path, t))
        params = (
            [(p, t) for p, t in found if isinstance(t, torch.nn.Parameter)] if with_grads else []
        )
        pending = [capture(t) for _, t in found]
        pending += [capture(t.grad) if t.grad is not None else None for _, t in params]
        resolved = resolve(pending)
        n = len(found)
        summaries = {p: r for (p, _), r in zip(found, resolved[:n], strict=True) if r is not None}
        grads = {p: r for (p, _), r in zip(params, resolved[n:], strict=True)}
        return summaries, grads

    # -- queries -------------------------------------------------------------------------------

    def _list_hooks(self, s: Session, path: str) -> None:
        self._hooks_path = path
        try:
            hooks = list_hooks(s.model, path, manager=s.hooks, script=s.script.path)
        except AttributeError:  # the module is gone (the structure changed)
            hooks = []
        self._post(up.HooksListed(path, tuple(hooks)))

    def _read_values(self, s: Session, q: ReadValues) -> None:
        t = _tensor_at(s.model, q.path)
        note = None
        if t is not None and q.grad:
            t = t.grad
            if t is None:
                note = "no gradient (.grad is None)"
        if t is None:
            self._post(up.ValuesRead(q.path, q.grad, q.offset, (), 0, (), note or "not found"))
            return
        count = max(0, min(q.count, VALUES_PAGE_LIMIT))
        with torch.no_grad():
            try:
                flat = t.detach()
                if flat.layout != torch.strided:
                    flat = flat.to_dense()
                flat = flat.reshape(-1)
                values = tuple(flat[q.offset : q.offset + count].cpu().tolist())
            except Exception as exc:  # meta, exotic subclasses: say why instead of failing
                self._post(
                    up.ValuesRead(
                        q.path,
                        q.grad,
                        q.offset,
                        (),
                        t.numel(),
                        tuple(t.shape),
                        f"<values unavailable: {exc}>",
                    )
                )
                return
        self._post(
            up.ValuesRead(q.path, q.grad, q.offset, values, flat.numel(), tuple(t.shape), note)
        )

    # -- findings ------------------------------------------------------------------------------

    def _start_doctor(self, session: Session, layout: up.ModelLayout) -> None:
        self._watcher = None
        found: list[Finding] = []
        if StepWatcher is not None:
            try:
                self._watcher = StepWatcher(session)
                found = list(self._watcher.initial())
            except Exception as exc:
                self._watcher = None
                self._post(up.Notice(f"the doctor failed: {type(exc).__name__}: {exc}", "warning"))
        if self._watcher is None:
            found = fallback_findings(layout.inventory)
        self._add_findings(found)

    def _step_findings(self, record: Any) -> None:
        found: list[Finding] = []
        if self._watcher is not None:
            try:
                found = list(self._watcher.after_step(record))
            except Exception as exc:
                self._watcher = None
                self._post(up.Notice(f"the doctor failed: {type(exc).__name__}: {exc}", "warning"))
        if self._watcher is None:
            found = step_findings(record)
        if found:
            self._add_findings(found)

    def _add_findings(self, found: Iterable[Finding]) -> None:
        for f in found:
            self._findings[(f.kind, f.path)] = f
        source = "doctor" if self._watcher is not None else "inventory"
        self._post(up.FindingsChanged(tuple(self._findings.values()), source))


def _tags(s: Session) -> tuple[str, ...]:
    if s.script.train_step is not None:
        return ("train_step",)
    tags = []
    if s.forward_only:
        tags.append("forward only")
    elif s.optimizer is None:
        tags.append("no optimizer")
    return tuple(tags)


def _fingerprint(model: torch.nn.Module) -> tuple[int, ...]:
    """Cheap facts that change when the tree or the train/eval flags change."""
    modules = training = params = buffers = 0
    for m in model.modules():
        modules += 1
        training += m.training
        params += len(m._parameters)
        buffers += len(m._buffers)
    return modules, training, params, buffers


def _tensor_at(model: torch.nn.Module, path: str) -> torch.Tensor | None:
    owner, _, name = path.rpartition(".")
    try:
        module = model.get_submodule(owner) if owner else model
    except AttributeError:
        return None
    t = module._parameters.get(name)
    if t is None:
        t = module._buffers.get(name)
    return t


def _event_of(draft: EventDraft) -> HookEvent:
    """A hook firing as an event now (the session makes its own at the end of the phase)."""
    fields = ("args", "output", "grad_input", "grad_output")
    summaries = iter(resolve([p for f in fields for p in (getattr(draft, f) or ())]))
    seen = {
        f: tuple(next(summaries) for _ in getattr(draft, f))
        for f in fields
        if getattr(draft, f) is not None
    }
    return HookEvent(
        0, draft.step, draft.phase, draft.module, draft.kind, draft.action, note=draft.note, **seen
    )
