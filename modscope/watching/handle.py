"""`modscope.watch()`: the user's own training loop watched, without changing it.

The loop's phases are seen from outside (`core.own_loop.OwnLoop`); each step it completes goes
through the same bundle `modscope run` uses (`PlainRun`, or `RecordedRun` with `record=`), so
the records, findings, layer statistics and recordings are those of `run`.
"""

from __future__ import annotations

import os
import sys
import threading
import warnings
from collections import deque
from collections.abc import Callable, Iterable
from typing import Any

import torch
from torch import nn

from modscope.core.contract.bounded import HISTORY_LIMIT
from modscope.core.contract.break_spec import parse_conditions
from modscope.core.contract.findings import Finding
from modscope.core.contract.hook_spec import HookSpec
from modscope.core.contract.layer_types import LayerStep
from modscope.core.contract.steps import (
    BreakError,
    BreakEvent,
    HookEvent,
    Phase,
    PhaseResult,
    StepRecord,
)
from modscope.core.model.state import inspected_module
from modscope.core.own_loop import OwnLoop, OwnStep
from modscope.core.process_rank import launched_rank, rank_folder
from modscope.core.script.outputs import FolderLock, OutputError
from modscope.core.session import Session, SessionOptions
from modscope.live import why_no_app, why_no_terminal
from modscope.report.breaks import break_paragraph
from modscope.report.record import (
    RecordedRun,
    check_recording_folder,
    open_recording_folder,
)
from modscope.report.run_command import PlainRun

ON_BREAK = ("app", "raise", "record", "print")
"""What `on_break` may name; a callable taking the `BreakEvent` is called instead."""

OnBreak = str | Callable[[BreakEvent], None] | None

_WATCHED: dict[int, str] = {}
"""The models being watched now (by id of the module inside any wrapper), with where."""
_WATCHED_LOCK = threading.Lock()


RECORDS_KEPT = HISTORY_LIMIT
"""The most steps whose records and layer statistics a watch keeps: a loop runs for as many
steps as it likes, and each record holds a summary of every tensor."""


class Watch:
    """A watched loop (see `modscope.watch`): a context manager, or `close()` when done."""

    def __init__(
        self,
        model: Any,
        optimizer: Any = None,
        *,
        breaks: Iterable[str] = (),
        record: str | os.PathLike[str] | None = None,
        layers: bool = False,
        hooks: Iterable[str] = (),
        on_break: OnBreak = None,
        overwrite: bool = False,
        origin: tuple[str, int] = ("<watch>", 0),
        close_on_break: bool = False,
    ) -> None:
        _check_objects(model, optimizer)
        conditions = parse_conditions(tuple(breaks))
        specs = [HookSpec.parse(text) for text in hooks]
        self.on_break = _resolve_on_break(on_break, record)
        self.close_on_break = close_on_break
        """Close before a break raises out of the user's code (a loop no `with` closes: the
        Hugging Face Trainer's)."""
        self.origin = origin
        self.findings: list[Finding] = []
        """The doctor's findings, as they came (the static ones first)."""
        self._layers: deque[LayerStep] = deque(maxlen=RECORDS_KEPT)
        self.breaks: list[BreakEvent] = []
        """The breaks that tripped."""
        self.closed = False
        folder = _record_folder(record)
        script = origin[0]
        if folder is not None:
            try:
                check_recording_folder(folder, script, overwrite=overwrite)
            except OutputError as exc:
                raise OutputError(f"modscope.watch: record={record!s}: {exc}") from None
        self._key = id(inspected_module(model))
        _claim(self._key, f"{origin[0]}:{origin[1]}")
        self._lock: FolderLock | None = None
        try:
            self.session = Session.from_objects(
                model,
                optimizer=optimizer,
                origin=script,
                options=SessionOptions(on_break=self._tripped, history=RECORDS_KEPT),
            )
        except BaseException:
            _release(self._key)
            raise
        try:
            for spec in specs:
                self.session.attach(spec)
            self.session.arm(conditions)
            self._loop: OwnLoop = self.session.own_loop(optimizer)
            self._loop.on_step = self._counted
            self._run: PlainRun | RecordedRun
            if folder is not None:
                self._lock = open_recording_folder(folder, script, overwrite=overwrite)
                self._run = RecordedRun(self.session, folder, None, layers=layers)
                self.session.on_break = self._tripped  # the recorder's controller set its own
            else:
                self._run = PlainRun(self.session, layers=layers)
            self.findings += self._run.initial
            self._loop.attach()
        except BaseException:
            self._release()
            raise

    # -- the handle ---------------------------------------------------------------------------

    @property
    def records(self) -> list[StepRecord]:
        """The newest steps' records (the loss, every gradient's summary, the `state_dict`
        diff), oldest first: the session's history, at most `RECORDS_KEPT`, fewer when the
        memory budget says so (a record of a model of 13,000 modules is about 15 MB)."""
        return list(self.session.history)

    @property
    def layers(self) -> list[LayerStep]:
        """The newest steps' layer statistics (with `layers=True`), oldest first, at most
        `RECORDS_KEPT`."""
        return list(self._layers)

    def __enter__(self) -> Watch:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def step(self, loss: Any = None) -> StepRecord | None:
        """Count a step now, with `loss` as its loss (a tensor or a number; None: the value
        `backward()` was called on). With an optimizer, steps count at each `optimizer.step()`
        by themselves: call this to hand the loss over. Returns the step's record (None when
        no forward ran since the step before)."""
        self._check_open()
        done = self._loop.step(loss)
        return done.record if done is not None else None

    def close(self) -> None:
        """Stop watching: a step the optimizer completed is counted, every hook modscope added
        is removed, the recording closed. Safe to call twice."""
        if self.closed:
            return
        try:
            self._loop.close()
        finally:
            self._release()

    @property
    def step_count(self) -> int:
        """The steps counted so far."""
        return self.session.step

    @property
    def events(self) -> tuple[HookEvent, ...]:
        """The events of the `hooks` attached (the newest 5,000), in order."""
        return tuple(self.session.events)

    # -- inside ---------------------------------------------------------------------------------

    def _check_open(self) -> None:
        if self.closed:
            raise RuntimeError("modscope.watch: this watch is closed")

    def _release(self) -> None:
        self.closed = True
        try:
            run = getattr(self, "_run", None)
            if run is not None:
                run.close()
            self.session.close()
        finally:
            if self._lock is not None:
                self._lock.release()
            _release(self._key)

    def _counted(self, own: OwnStep) -> None:
        result = PhaseResult(
            own.step,
            Phase.OPTIMIZER,
            events=own.events,
            output=own.record.output if own.record else None,
            loss=own.record.loss if own.record else None,
            record=own.record,
            error=own.error,
        )
        if own.error is not None:
            # The loop is the user's: it goes on, the step counted with no record.
            warnings.warn(
                f"modscope.watch: step {own.step} has no record: {own.error.describe()}",
                RuntimeWarning,
                stacklevel=2,
            )
        it = self._run.observed(result)
        self.findings += it.findings
        if it.layers is not None:
            self._layers.append(it.layers)

    def _tripped(self, event: BreakEvent) -> None:
        """An armed condition tripped, inside the user's code: do what `on_break` says; with
        `close_on_break`, whatever raises out of it (a `BreakError`) closes the watch first."""
        try:
            self._break(event)
        except BaseException:
            if self.close_on_break:
                self.close()
            raise

    def _break(self, event: BreakEvent) -> None:
        self.breaks.append(event)
        if isinstance(self._run, RecordedRun):
            self._run.record_break(event)
        mode = self.on_break
        if callable(mode):
            mode(event)
            return
        text = break_paragraph(event).plain
        if mode == "print":
            print(text, file=sys.stderr, flush=True)
            return
        if mode == "record":
            return
        if mode == "app":
            from modscope.watching.app import open_at_break, own_loop_view

            reason = why_no_app()
            if reason is None:
                last = self._layers[-1] if self._layers else None
                view = own_loop_view(self.session, event, self.findings, last)
                open_at_break(f"{self.origin[0]}:{self.origin[1]}", self.session, view)
            else:
                print(f"modscope.watch: {reason}; raising instead", file=sys.stderr)
        raise BreakError(event, text)


def _check_objects(model: Any, optimizer: Any) -> None:
    if not isinstance(model, nn.Module):
        raise TypeError(f"modscope.watch: model is a {type(model).__name__}, not an nn.Module")
    if optimizer is None:
        return
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise TypeError(
            f"modscope.watch: optimizer is a {type(optimizer).__name__}, not a "
            "torch.optim.Optimizer"
        )
    own = {id(p) for p in model.parameters()}
    held = [p for g in optimizer.param_groups for p in g["params"]]
    foreign = [p for p in held if id(p) not in own]
    # Some of them not the model's is the doctor's to report (a layer kept in a plain list,
    # a loss with parameters of its own); none of them is another model's optimizer.
    if held and len(foreign) == len(held):
        shapes = ", ".join(str(tuple(p.shape)) for p in foreign[:3])
        raise ValueError(
            f"modscope.watch: the optimizer holds {len(foreign)} parameter(s) that are not the "
            f"model's ({shapes}{', ...' if len(foreign) > 3 else ''}): pass the optimizer that "
            "trains this model"
        )


def _resolve_on_break(on_break: OnBreak, record: object) -> str | Callable[[BreakEvent], None]:
    if on_break is None:
        return "app" if why_no_terminal() is None else "raise"
    if callable(on_break):
        return on_break
    if on_break not in ON_BREAK:
        raise ValueError(
            f"modscope.watch: on_break={on_break!r}; it is one of {', '.join(ON_BREAK)}, "
            "or a function that takes the break"
        )
    if on_break == "record" and record is None:
        raise ValueError(
            'modscope.watch: on_break="record" writes to the recording: give record=DIR'
        )
    return on_break


def _record_folder(record: str | os.PathLike[str] | None) -> str | None:
    """`record` made absolute; under torchrun each rank's own `DIR/rank<N>`."""
    if record is None:
        return None
    folder = os.path.abspath(os.fspath(record))
    place = launched_rank()
    return rank_folder(folder, place.rank) if place is not None else folder


def _claim(key: int, where: str) -> None:
    with _WATCHED_LOCK:
        if key in _WATCHED:
            raise RuntimeError(
                f"modscope.watch: this model is watched already (since {_WATCHED[key]}); "
                "close that watch first"
            )
        _WATCHED[key] = where


def _release(key: int) -> None:
    with _WATCHED_LOCK:
        _WATCHED.pop(key, None)
