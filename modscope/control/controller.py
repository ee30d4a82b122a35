"""The session controller: owns the Session and turns each command into a list of frozen updates.

Synchronous and thread-free: `load()`, `handle(command)` and `close()` return the updates they
produced. The one place it waits is a pause (a `pause` hook, a break, Ctrl-C): its `PauseLoop`
(`modscope.control.pause_loop`) hands what it has so far to `emit`, then takes commands from
`wait()` until the user answers. The thread shell (`modscope.control.thread`) runs it on one
thread; tests drive it directly with a list of commands.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterable, Sequence
from dataclasses import dataclass

from modscope.control import commands as cmd
from modscope.control import hook_desk
from modscope.control import updates as up
from modscope.control.internal import internal_error, logged
from modscope.control.pause_loop import PauseLoop, Wait
from modscope.control.snapshots import SUMMARIZE_ALL_LIMIT, make_layout, read_values, summaries_of
from modscope.core.contract.findings import Finding, FindingKind
from modscope.core.contract.hook_spec import HookInfo, HookSpec, HookSpecError
from modscope.core.contract.steps import Phase, PhaseResult, StepRecord
from modscope.core.doctor.rules import dedup_key
from modscope.core.hooks.manager import EventDraft
from modscope.core.model.walk import structure_fingerprint
from modscope.core.onlookers import Onlookers
from modscope.core.rewind.checkpoints import RewindError
from modscope.core.script.errors import ScriptError, user_error
from modscope.core.script.print_capture import PrintSink
from modscope.core.session import Session, SessionOptions

if sys.version_info >= (3, 11):
    from typing import assert_never
else:  # Python 3.10: torch and textual both install typing_extensions
    from typing_extensions import assert_never

PauseHandler = Callable[[EventDraft], None]
SessionFactory = Callable[[PrintSink, PauseHandler], Session]
Emit = Callable[[Sequence[up.Update]], None]


def script_factory(
    script: str, model_name: str | None = None, options: SessionOptions | None = None
) -> SessionFactory:
    """The session factory `modscope SCRIPT` uses: load `script` with `options` (default:
    rewind on), the sink and pause handler the controller gives."""
    options = options or SessionOptions(rewind=True)

    def load(sink: PrintSink, pause: PauseHandler) -> Session:
        return Session.load(
            script, model_name=model_name, options=options.with_handlers(sink, pause)
        )

    return load


@dataclass(frozen=True)
class OwnLoopView:
    """The app opened on a loop the user's own code runs (`modscope.watch()`, at a break): the
    iterations cannot go on from here, so stepping, rewinding and reloading only say so; the
    session stays the watch's when the app closes; `shown` (the steps, findings and the break
    so far) is painted after the load."""

    shown: tuple[up.Update, ...]
    why: str
    """What the app says to a command that would run the model."""
    notes: tuple[str, ...] = ()
    """How the iterations run, in words (instead of the model script's)."""


class SessionController:
    """One Session under the app's commands (see the module docstring)."""

    def __init__(
        self,
        factory: SessionFactory,
        *,
        script: str,
        hook_specs: Sequence[str] = (),
        break_specs: Sequence[str] = (),
        emit: Emit | None = None,
        wait: Wait | None = None,
        own_loop: OwnLoopView | None = None,
    ) -> None:
        self.script = script
        self._own_loop = own_loop
        """The user's own loop runs the iterations (`modscope.watch()`): see `OwnLoopView`."""
        self._break_specs = tuple(break_specs)
        self.script_name = os.path.basename(script)
        self._factory = factory
        self._hook_specs = tuple(hook_specs)
        self._emit = emit or (lambda updates: None)
        self._streaming = emit is not None
        """Updates can be handed over before a command ends (the app's thread gives `emit`)."""
        self._pauses = PauseLoop(wait, show=self._show, serve=self._serve)
        self._out: list[up.Update] = []
        self._session: Session | None = None
        self._onlookers: Onlookers | None = None
        """The doctor, the ranks and the layers on the session (`core.onlookers`)."""
        self._layers_wanted = False  # the layers view was opened: again after a reload
        self._generation = 0
        self._version = 0
        self._shown_paths: set[str] = set()
        self._tensor_paths: tuple[str, ...] = ()
        self._fingerprint: tuple[int, ...] = ()
        self._findings: dict[tuple[FindingKind, str], Finding] = {}
        self._hooks_path: str | None = None
        self._furthest = 0  # the furthest step reached (a rewind goes back from it)

    @property
    def session(self) -> Session | None:
        """The live session (None before a load and after a failed one)."""
        return self._session

    @property
    def paused(self) -> bool:
        return self._pauses.paused_at is not None

    def interrupt(self) -> None:
        """Ctrl-C (called from another thread): the step under way pauses at its next phase
        boundary, as at a pause hook (`c` goes on, `u` undoes it); one that ends there ends."""
        self._pauses.interrupt()

    # -- the commands --------------------------------------------------------------------------

    def load(self) -> list[up.Update]:
        """Load the script (at start); the updates say what came of it."""
        self._guarded(self._load)
        return self._take()

    def handle(self, command: cmd.Command) -> list[up.Update]:
        """Run one command; returns its updates, the status last."""
        self._guarded(self._execute, command)
        later = self._pauses.after_command()
        if isinstance(later, cmd.ABANDONS):
            # Pressed at a pause: the iteration has unwound; now load again, or rewind.
            self._guarded(self._execute, later)
        return self._take()

    def close(self) -> list[up.Update]:
        """Close the session: every hook modscope added removed, a partial iteration dropped
        (a watched loop's session is left to its watch)."""
        self._pauses.closing = True
        if self._own_loop is not None:
            self._session = None
        self._close_session()
        return self._take()

    def observed(self, result: PhaseResult) -> list[up.Update]:
        """An iteration the user's own loop ran (`modscope.watch()`, recording): its updates,
        as after a `Step`."""
        self._guarded(self._after, result)
        return self._take()

    def status(self) -> up.SessionStatus:
        """The session's facts as of now, for the status line."""
        s = self._session
        if s is None:
            return up.SessionStatus(self.script_name, paused_at=self._pauses.paused_at)
        return up.SessionStatus(
            script=self.script_name,
            loaded=True,
            step=s.step,
            next_phase=s.next_phase,
            in_iteration=s.in_iteration,
            phases=s.phases(),
            training=s.training,
            last_loss=s.last_loss,
            last_output=s.last_output,
            paused_at=self._pauses.paused_at,
            tags=_tags(s),
            hooks=len(s.hooks.attached),
            breaks=tuple(str(c) for c in s.armed),
            rewind=s.rewind_note() is None,
            last_step=self._furthest,
            fork=s.original.fork if s.original is not None else None,
        )

    def _take(self) -> list[up.Update]:
        self._out.append(up.StatusChanged(self.status()))
        out, self._out = self._out, []
        return out

    def _guarded(self, fn: Callable[..., None], *args: object) -> None:
        # A bug in modscope must not end the session: say so, with the traceback, and go on.
        try:
            fn(*args)
        except Exception as exc:
            self._out.append(internal_error(exc))

    def _execute(self, command: cmd.Command) -> None:
        if self._own_loop is not None and isinstance(command, cmd.RUNS_THE_MODEL):
            self._out.append(up.Notice(self._own_loop.why, "warning"))
            return
        if isinstance(command, cmd.Reload):
            self._close_session()
            self._load()
            return
        s = self._session
        if s is None:
            return
        match command:
            case cmd.Step():
                self._after(self._pauses.run_phases(s, whole_iteration=True))
            case cmd.NextPhase():
                self._after(self._pauses.run_phases(s, whole_iteration=False))
            case cmd.ToggleTraining():
                s.set_training(not s.training)
                self._after_change(None)
            case cmd.ListHooks(path=path):
                self._list_hooks(s, path)
            case cmd.ReadValues(path=path, offset=offset, count=count, grad=grad):
                self._out.append(read_values(s.model, path, offset, count, grad=grad))
            case cmd.ShowTensors(paths=paths):
                self._show_tensors(s, paths)
            case cmd.AttachHook(spec=spec):
                self._attach(s, spec, source="h")
            case cmd.DetachHook(hook=hook):
                self._detach(s, hook)
            case cmd.ArmBreaks(conditions=conditions):
                self._arm(s, conditions)
            case cmd.CollectLayers():
                self._want_layers()
            case cmd.Rewind():
                # Back to the start of an iteration under way or dropped halfway, else one back.
                self._rewind(s, s.step if s.partial else s.step - 1)
            case cmd.GoToStep(step=step):
                self._rewind(s, step)
            case cmd.CompareTimelines():
                self._compare_timelines(s)
            case cmd.Continue() | cmd.Quit() | cmd.SwitchRank():
                pass  # nothing to do outside a pause (SwitchRank: a replay's)
            case _:
                assert_never(command)

    # -- loading -------------------------------------------------------------------------------

    def _load(self) -> None:
        self._generation += 1
        self._pauses.closing = False
        try:
            session = self._factory(self.printed, self._pauses.at_hook)
        except ScriptError as exc:
            self._out.append(up.LoadFailed(exc.error))
            return
        except Exception as exc:
            self._out.append(up.LoadFailed(user_error(exc, phase=Phase.LOAD, script=self.script)))
            return
        loaded_at = time.perf_counter()
        self._session = session
        self._version += 1
        self._shown_paths = set()
        self._findings = {}
        for text in self._hook_specs:
            try:
                spec = HookSpec.parse(text)
            except HookSpecError as exc:
                self._out.append(up.Notice(f"--hook: {exc}", "error"))
                continue
            self._attach(session, spec, source="--hook", relist=False)
        if self._own_loop is None:
            session.on_break = self._pauses.at_break
            self._onlookers = Onlookers(session, layers=self._layers_wanted)
        if self._break_specs:
            self._arm(session, self._break_specs)
        layout = self._relayout(session)
        notes = self._own_loop.notes if self._own_loop is not None else tuple(session.notes())
        self._out.append(up.Loaded(layout, notes, loaded_at))
        self._summarize(session, record=None, baseline=True)
        if self._streaming:
            self._flush()  # the tree is painted while the doctor's static checks run
        if self._onlookers is not None:
            self._add_findings(self._onlookers.initial(), always=True)
        if self._own_loop is not None:
            self._out += self._own_loop.shown

    def _relayout(self, session: Session) -> up.ModelLayout:
        layout = make_layout(session, script_name=self.script_name, generation=self._generation)
        self._tensor_paths = tuple(layout.tensors)
        self._fingerprint = structure_fingerprint(session.model)
        return layout

    def _close_session(self) -> None:
        s, self._session = self._session, None
        self._pauses.paused_at = None
        onlookers, self._onlookers = self._onlookers, None
        if onlookers is not None:
            onlookers.close()
        if s is not None:
            try:
                s.close()
            except Exception as exc:
                self._out.append(up.Notice(f"closing the session: {exc}", "error"))

    def printed(self, line: str) -> None:
        """The script printed `line` (the session's sink)."""
        self._out.append(up.Printed(line))

    # -- stepping ------------------------------------------------------------------------------

    def _after(self, result: PhaseResult) -> None:
        if result.events:
            self._out.append(up.HookEventsSeen(result.events))
        kept = self._session.history.maxlen if self._session is not None else None
        self._out.append(
            up.PhaseDone(
                result.step, result.phase, result.record, result.error, result.abandoned, kept
            )
        )
        if result.error is not None and result.error.internal:
            # modscope's own failure: with its traceback behind `!` and in the log file.
            error = result.error
            self._out.append(logged(error.message, error.traceback, what=error.message))
        found: tuple[Finding, ...] = ()
        if self._onlookers is not None and (result.record or result.error or result.abandoned):
            seen = self._onlookers.after(result.record)
            if seen.layers is not None:
                self._out.append(up.LayersSeen(seen.layers))
            found = seen.findings
        self._after_change(result.record, found)

    def _after_change(self, record: StepRecord | None, found: Sequence[Finding] = ()) -> None:
        s = self._session
        assert s is not None
        self._version += 1
        if structure_fingerprint(s.model) != self._fingerprint:
            self._out.append(up.LayoutChanged(self._relayout(s)))
            if self._onlookers is not None:
                self._onlookers.rewatch()  # the layers' hooks on the modules it has now
        self._summarize(s, record=record)
        self._furthest = max(self._furthest, s.step)
        if record is not None:
            self._add_findings(found)
        if self._hooks_path is not None:
            self._list_hooks(s, self._hooks_path)

    # -- rewind --------------------------------------------------------------------------------

    def _rewind(self, s: Session, step: int) -> None:
        """Back to the state after `step` iterations (`u`, `g`), painted anew: the tree, details,
        loss plot and findings show that step."""
        if step < 0 or step > s.step:
            ahead = f"step {step} is ahead of step {s.step}: s runs on" if step > 0 else None
            self._out.append(up.Notice(ahead or "this is the first step", "warning"))
            return
        try:
            s.rewind(step)
        except (RewindError, ValueError) as exc:
            self._out.append(up.Notice(f"rewind: {exc}", "error"))
            return
        finally:
            if self._onlookers is not None:
                self._onlookers.discard()  # the re-run iterations of a thinned checkpoint
        self._version += 1
        layout = self._relayout(s)
        self._out += [up.Repaint(step), up.Loaded(layout, tuple(s.notes()), time.perf_counter())]
        self._out += up.history_shown(s.history, s.history.maxlen)
        self._summarize(s, record=None, baseline=True)
        if self._onlookers is not None:
            self._out.append(up.FindingsChanged(tuple(self._findings.values())))
        if s.original is not None:
            o = s.original
            self._out.append(up.OtherTimeline(o.fork, o.end, o.losses()))
        self._out.append(up.Notice(f"rewound to step {step}"))

    def _compare_timelines(self, s: Session) -> None:
        try:
            self._out.append(up.TimelinesCompared(s.compare_timelines()))
        except RewindError as exc:
            self._out.append(up.TimelinesCompared(error=str(exc)))

    # -- pauses --------------------------------------------------------------------------------

    def _show(self, shown: up.Update) -> None:
        """A pause began: hand over what the command has so far, and `shown`, now."""
        self._out.append(shown)
        self._flush()

    def _serve(self, query: cmd.Command) -> None:
        """A query at a pause: its updates go out while the iteration waits."""
        self._guarded(self._execute, query)
        self._flush()

    def _flush(self) -> None:
        """Hand the updates so far to `emit` now (at a pause the command is not over yet)."""
        self._emit(self._take())

    # -- hooks and breaks ----------------------------------------------------------------------

    def _attach(self, s: Session, spec: HookSpec, *, source: str, relist: bool = True) -> None:
        self._out += hook_desk.attach(s, spec, source=source)
        if relist and self._hooks_path is not None:
            self._list_hooks(s, self._hooks_path)

    def _detach(self, s: Session, hook: HookInfo) -> None:
        self._out += hook_desk.detach(s, hook)
        if self._hooks_path is not None:
            self._list_hooks(s, self._hooks_path)

    def _arm(self, s: Session, conditions: Sequence[str]) -> None:
        self._out += hook_desk.arm(s, conditions)

    def _want_layers(self) -> None:
        """The layers view was opened: statistics from the next iteration on, after a reload too."""
        self._layers_wanted = True
        if self._onlookers is not None and self._onlookers.want_layers():
            self._out.append(up.Notice("layers: statistics are collected from the next step on"))

    def _list_hooks(self, s: Session, path: str) -> None:
        self._hooks_path = path  # listed again after each change, while the pane shows it
        self._out.append(hook_desk.hooks_of(s, path))

    # -- summaries -----------------------------------------------------------------------------

    def _summarize(self, s: Session, *, record: StepRecord | None, baseline: bool = False) -> None:
        """This version's summaries: the record's, plus what is shown and not in it."""
        everything = self._summarize_all
        wanted = self._tensor_paths if everything else tuple(self._shown_paths)
        summaries = dict(record.state) if record is not None else {}
        grads = dict(record.grads) if record is not None else {}
        missing = [p for p in wanted if p not in summaries]
        fresh, fresh_grads = summaries_of(s.model, missing, with_grads=record is None)
        summaries.update(fresh)
        grads.update(fresh_grads)
        self._out.append(
            up.TensorsSummarized(
                self._version, summaries, grads, replace=True, baseline=baseline and everything
            )
        )

    @property
    def _summarize_all(self) -> bool:
        return len(self._tensor_paths) <= SUMMARIZE_ALL_LIMIT

    def _show_tensors(self, s: Session, paths: Iterable[str]) -> None:
        new = [p for p in paths if p not in self._shown_paths]
        self._shown_paths.update(new)
        if self._summarize_all or not new:
            return
        fresh, grads = summaries_of(s.model, new, with_grads=True)
        self._out.append(up.TensorsSummarized(self._version, fresh, grads, replace=False))

    # -- findings ------------------------------------------------------------------------------

    def _add_findings(self, found: Iterable[Finding], *, always: bool = False) -> None:
        """Merge `found` into the findings shown (one per kind and subject, the latest kept)."""
        found = list(found)
        for f in found:
            self._findings[dedup_key(f)] = f
        if found or always:
            self._out.append(up.FindingsChanged(tuple(self._findings.values()), tuple(found)))


def _tags(s: Session) -> tuple[str, ...]:
    if s.script.train_step is not None:
        return ("train_step",)
    if s.forward_only:
        return ("forward only",)
    if s.optimizer is None:
        return ("no optimizer",)
    return ()


def controller_factory(
    session_factory: SessionFactory,
    *,
    script: str,
    hook_specs: Sequence[str] = (),
    break_specs: Sequence[str] = (),
    own_loop: OwnLoopView | None = None,
) -> Callable[[Emit, Wait], SessionController]:
    """What the app's thread builds its controller with (`SessionThread(factory)`)."""

    def make(emit: Emit, wait: Wait) -> SessionController:
        return SessionController(
            session_factory,
            script=script,
            hook_specs=hook_specs,
            break_specs=break_specs,
            emit=emit,
            wait=wait,
            own_loop=own_loop,
        )

    return make
