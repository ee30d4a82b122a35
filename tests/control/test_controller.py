"""The session controller, driven directly: commands in, frozen updates out, no app, no thread.

At a pause hook the controller takes its next commands from `wait`; here that is a scripted list.
"""

from __future__ import annotations

import dataclasses
import threading
from collections.abc import Callable, Sequence
from pathlib import Path

import pytest

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController, script_factory
from modscope.control.thread import SessionThread
from modscope.core.contract.hook_spec import HookKind, HookSpec
from modscope.core.contract.steps import Phase
from tests.helpers import POWLOG, example


class Scripted:
    """A controller with a scripted answer list for pauses, and everything it emitted."""

    def __init__(self, script: str = POWLOG, hooks: Sequence[str] = ()) -> None:
        self.answers: list[cmd.Command] = []
        self.emitted: list[up.Update] = []
        self.waits = 0
        self.c = SessionController(
            script_factory(script),
            script=script,
            hook_specs=hooks,
            emit=self.emitted.extend,
            wait=self._wait,
        )

    def _wait(self) -> cmd.Command:
        self.waits += 1
        return self.answers.pop(0) if self.answers else cmd.Quit()

    def load(self) -> list[up.Update]:
        """`c.load()`: what it handed over early (the tree, before the doctor runs), then what
        it returned; `emitted` is left empty for what follows."""
        returned = self.c.load()
        self.early = list(self.emitted)
        self.emitted.clear()
        return self.early + returned


def of(updates: Sequence[up.Update], kind: type) -> list:
    return [u for u in updates if isinstance(u, kind)]


def state_value(updates: Sequence[up.Update], key: str) -> float:
    (done,) = [u for u in of(updates, up.PhaseDone) if u.record is not None]
    return done.record.state[key].values[0]


def test_load_gives_the_layout_summaries_findings_and_status_last():
    s = Scripted()
    updates = s.load()
    # The tree and its summaries go first, before the doctor's static checks have run.
    assert of(s.early, up.Loaded) and of(s.early, up.TensorsSummarized)
    assert not of(s.early, up.FindingsChanged)
    (loaded,) = of(updates, up.Loaded)
    assert loaded.layout.model_name == "model"
    assert set(loaded.layout.tensors) == {"powModel.powParam", "logModel.logParam"}
    assert loaded.layout.summarize_all
    (summ,) = of(updates, up.TensorsSummarized)
    assert summ.baseline and summ.summaries["powModel.powParam"].values == (1.0,)
    assert of(updates, up.FindingsChanged)  # the doctor's static findings (none here)
    assert isinstance(updates[-1], up.StatusChanged) and updates[-1].status.loaded
    assert updates[-1].status.phases == (Phase.FORWARD, Phase.BACKWARD, Phase.OPTIMIZER)


def test_ten_steps_reach_the_article_table():
    s = Scripted()
    s.load()
    for _ in range(9):
        s.c.handle(cmd.Step())
    last = s.c.handle(cmd.Step())
    assert state_value(last, "powModel.powParam") == pytest.approx(1.2430, abs=5e-5)
    assert state_value(last, "logModel.logParam") == pytest.approx(1.9815, abs=5e-5)
    assert last[-1].status.step == 10


def test_next_phase_steps_one_phase_and_says_the_forward_output():
    s = Scripted()
    s.load()
    updates = s.c.handle(cmd.NextPhase())
    (done,) = of(updates, up.PhaseDone)
    assert done.phase is Phase.FORWARD and done.record is None
    status = updates[-1].status
    assert status.in_iteration and status.next_phase is Phase.BACKWARD
    assert status.last_output.values[0] == pytest.approx(4.8283, abs=5e-5)  # z, the article's


def test_updates_are_frozen_plain_data():
    s = Scripted()
    updates = s.load() + s.c.handle(cmd.Step())
    for u in updates:
        assert dataclasses.is_dataclass(u)
        with pytest.raises(dataclasses.FrozenInstanceError):
            setattr(u, dataclasses.fields(u)[0].name, None)


def test_a_pause_serves_queries_then_continue_finishes_the_iteration():
    s = Scripted(hooks=["powModel:forward:pause"])
    s.load()
    s.answers = [cmd.ListHooks("powModel"), cmd.Continue()]
    updates = s.c.handle(cmd.Step())
    (paused,) = of(s.emitted, up.Paused)
    assert paused.event.module == "powModel" and paused.event.kind is HookKind.FORWARD
    assert paused.event.output[0].values[0] == pytest.approx(125.0)  # what arrived: x ** q
    pause_status = [u.status for u in of(s.emitted, up.StatusChanged)]
    assert pause_status[0].paused_at == "powModel (forward)"
    (listed,) = of(s.emitted, up.HooksListed)  # served while the iteration waited
    assert [h.action for h in listed.hooks] == ["powModel:forward:pause"]
    assert state_value(updates, "powModel.powParam") == pytest.approx(1.1034, abs=5e-5)
    assert updates[-1].status.paused_at is None and s.waits == 2


def test_step_at_a_pause_runs_through_later_pauses_to_the_end_of_the_iteration():
    s = Scripted(hooks=["powModel:forward:pause", "logModel:forward:pause"])
    s.load()
    s.answers = [cmd.Step()]
    updates = s.c.handle(cmd.Step())
    assert [p.event.module for p in of(s.emitted, up.Paused)] == ["powModel"]
    assert state_value(updates, "logModel.logParam") == pytest.approx(1.4994, abs=5e-5)
    # The next request pauses again, at each pause with `c`.
    s.emitted.clear()
    s.answers = [cmd.Continue(), cmd.Continue()]
    s.c.handle(cmd.Step())
    assert [p.event.module for p in of(s.emitted, up.Paused)] == ["powModel", "logModel"]


def test_next_phase_at_a_pause_ends_the_request_after_that_phase():
    s = Scripted(hooks=["powModel:forward:pause"])
    s.load()
    s.answers = [cmd.NextPhase()]
    updates = s.c.handle(cmd.Step())
    (done,) = of(updates, up.PhaseDone)
    assert done.phase is Phase.FORWARD and done.record is None
    assert updates[-1].status.next_phase is Phase.BACKWARD


def test_quit_at_a_pause_abandons_the_iteration_cleanly():
    s = Scripted(hooks=["powModel:forward:pause"])
    s.load()
    s.answers = [cmd.Quit()]
    updates = s.c.handle(cmd.Step())
    (done,) = of(updates, up.PhaseDone)
    assert done.abandoned and done.record is None
    session = s.c.session
    assert session.step == 0 and not session.in_iteration and not session.hooks._transient
    assert session.model.powModel.powParam.item() == 1.0
    s.c.close()
    assert not session.model.powModel._forward_hooks  # every hook removed


def test_reload_at_a_pause_unwinds_then_loads_again():
    s = Scripted(hooks=["powModel:forward:pause"])
    s.load()
    first = s.c.session
    s.answers = [cmd.Reload()]
    updates = s.emitted + s.c.handle(cmd.Step())  # the new tree is handed over early
    assert of(updates, up.PhaseDone)[0].abandoned
    assert of(updates, up.Loaded) and s.c.session is not first
    assert not first.model.powModel._forward_hooks


def test_attach_and_detach_from_commands():
    s = Scripted()
    s.load()
    s.c.handle(cmd.ListHooks("logModel"))
    updates = s.c.handle(cmd.AttachHook(HookSpec.parse("logModel:forward-pre:scale=2")))
    (listed,) = of(updates, up.HooksListed)
    (hook,) = listed.hooks
    assert hook.hook_id.is_modscope and hook.action == "logModel:forward-pre:scale=2"
    step = s.c.handle(cmd.NextPhase())
    assert step[-1].status.last_output.values[0] == pytest.approx(5.5215, abs=5e-5)  # Hook Code 1
    updates = s.c.handle(cmd.DetachHook(hook))
    assert of(updates, up.HooksListed)[0].hooks == ()
    assert not s.c.session.model.logModel._forward_pre_hooks


def test_a_bad_attach_is_a_notice_not_a_crash():
    s = Scripted()
    s.load()
    updates = s.c.handle(cmd.AttachHook(HookSpec("nope", HookKind.FORWARD)))
    (notice,) = of(updates, up.Notice)
    assert notice.severity == "error" and "no module 'nope'" in notice.message


def test_a_load_error_names_the_file_and_line(tmp_path):
    bad = tmp_path / "bad.py"
    bad.write_text("import torch\nmodel = torch.nn.Linear(2, 2)\nraise ValueError('boom')\n")
    s = Scripted(str(bad))
    (failed,) = of(s.load(), up.LoadFailed)
    assert failed.error.line == 3 and failed.error.file.endswith("bad.py")
    assert s.c.session is None
    assert s.c.handle(cmd.Step())[-1].status.loaded is False  # nothing to step: no crash


def test_the_doctor_runs_on_load_and_after_steps():
    s = Scripted(example("containers.py"))
    updates = s.load()
    kinds = {f.kind for f in of(updates, up.FindingsChanged)[-1].findings}
    assert "unregistered-module" in kinds


def test_an_internal_error_keeps_its_traceback_and_the_session_goes_on(monkeypatch):
    s = Scripted()
    s.load()

    def broken(*args: object, **kwargs: object) -> None:
        raise RuntimeError("a bug in modscope")

    monkeypatch.setattr("modscope.control.hook_desk.list_hooks", broken)
    updates = s.c.handle(cmd.ListHooks("powModel"))
    (err,) = of(updates, up.InternalError)
    assert "a bug in modscope" in err.message and "Traceback" in err.traceback
    assert err.log_file is not None and "a bug in modscope" in Path(err.log_file).read_text()
    monkeypatch.undo()
    assert of(s.c.handle(cmd.Step()), up.PhaseDone)[0].record.step == 1


# -- the thread shell -------------------------------------------------------------------------


def run_thread(hooks: Sequence[str] = ()) -> tuple[SessionThread, threading.Event]:
    woke = threading.Event()

    def make(emit: Callable, wait: Callable) -> SessionController:
        return SessionController(
            script_factory(POWLOG), script=POWLOG, hook_specs=hooks, emit=emit, wait=wait
        )

    thread = SessionThread(make, wake=woke.set)
    return thread, woke


def drain_until(thread: SessionThread, woke: threading.Event, done: Callable[[up.Batch], bool]):
    seen: list[up.Update] = []
    for _ in range(600):
        woke.wait(0.05)
        woke.clear()
        batch = thread.drain()
        seen.extend(batch.updates)
        if done(batch):
            return batch, seen
    raise AssertionError("the session thread never got there")


def test_ids_say_when_every_submitted_command_has_run():
    thread, woke = run_thread()
    first = thread.start()
    ids = [thread.submit(cmd.Step()) for _ in range(3)]
    assert ids == [first + 1, first + 2, first + 3]
    batch, seen = drain_until(thread, woke, lambda b: b.done_through >= ids[-1] and not b.busy)
    steps = [u.record.step for u in of(seen, up.PhaseDone) if u.record]
    assert steps == [1, 2, 3] and batch.queued == 0
    thread.stop()
    assert thread.join(10)


def test_a_paused_command_counts_as_run_and_queries_are_served_at_the_pause():
    thread, woke = run_thread(["powModel:forward:pause"])
    thread.start()
    step = thread.submit(cmd.Step())
    later = thread.submit(cmd.Step())  # queued before the pause began: a new iteration later
    batch, seen = drain_until(thread, woke, lambda b: b.done_through >= step)
    assert of(seen, up.Paused) and batch.done_through == step  # the later step waits its turn
    query = thread.submit(cmd.ListHooks("powModel"))
    batch, seen = drain_until(
        thread, woke, lambda b: b.done_through >= step and of(b.updates, up.HooksListed)
    )
    assert query > later
    answer = thread.submit(cmd.Continue())
    batch, seen = drain_until(thread, woke, lambda b: of(b.updates, up.Paused) != [])
    # `later` ran into the pause again; everything up to the answer has run.
    assert batch.done_through >= later
    assert [u.record.step for u in of(seen, up.PhaseDone) if u.record] == [1]
    thread.stop()  # abandons the second pause, closes the session
    assert thread.join(10)
    assert answer == later + 2


def test_stop_while_paused_ends_the_thread_and_removes_every_hook():
    thread, woke = run_thread(["powModel:forward:pause"])
    thread.start()
    thread.submit(cmd.Step())
    drain_until(thread, woke, lambda b: of(b.updates, up.Paused) != [])
    model = thread._controller.session.model
    thread.stop()
    assert thread.join(10)
    assert not model.powModel._forward_hooks


def test_a_continuous_run_stops_on_set_running_false():
    thread, woke = run_thread()
    thread.start()
    drain_until(thread, woke, lambda b: b.done_through >= 1 and not b.busy)
    thread.set_running(True)
    drain_until(
        thread,
        woke,
        lambda b: any(u.record and u.record.step >= 3 for u in of(b.updates, up.PhaseDone)),
    )
    thread.set_running(False)
    batch, _ = drain_until(thread, woke, lambda b: not b.busy and not b.running)
    assert not batch.running
    thread.stop()
    assert thread.join(10)


def test_a_command_that_raises_anything_is_shown_and_the_thread_goes_on():
    thread, woke = run_thread()
    controller = thread._controller
    handle = controller.handle
    calls = {"n": 0}

    def flaky(command: cmd.Command) -> list[up.Update]:
        calls["n"] += 1
        if calls["n"] == 1:
            raise SystemExit(3)  # not an Exception: must not end the thread
        return handle(command)

    controller.handle = flaky  # type: ignore[method-assign]
    thread.start()
    first = thread.submit(cmd.Step())
    _, seen = drain_until(thread, woke, lambda b: b.done_through >= first and not b.busy)
    (err,) = of(seen, up.InternalError)
    assert "SystemExit" in err.message and "Traceback" in err.traceback
    second = thread.submit(cmd.Step())
    _, seen = drain_until(thread, woke, lambda b: b.done_through >= second and not b.busy)
    assert [u.record.step for u in of(seen, up.PhaseDone) if u.record] == [1]
    thread.stop()
    assert thread.join(10)


def test_a_break_condition_waits_for_the_user_like_a_pause():
    nan_origin = example("nan_origin.py")
    s = Scripted(nan_origin)
    s.c = SessionController(
        script_factory(nan_origin),
        script=nan_origin,
        break_specs=["nan"],
        emit=s.emitted.extend,
        wait=s._wait,
    )
    assert s.load()[-1].status.breaks == ("nan",)
    s.c.handle(cmd.Step())
    s.c.handle(cmd.Step())
    assert not of(s.emitted, up.BreakHit)
    s.answers = [cmd.ListHooks("blocks.1.gate"), cmd.Continue()]
    updates = s.c.handle(cmd.Step())
    (hit,) = of(s.emitted, up.BreakHit)
    assert hit.event.module == "blocks.1.gate" and hit.event.class_name == "LogGate"
    assert hit.event.step == 3 and hit.event.phase is Phase.FORWARD
    statuses = [u.status.paused_at for u in of(s.emitted, up.StatusChanged)]
    assert statuses[0] == "break nan at blocks.1.gate"
    # Continue lets the iteration go on: it completes (with its NaN, a finding).
    assert of(updates, up.PhaseDone)[0].record.step == 3
    updates = s.c.handle(cmd.ArmBreaks(()))
    assert updates[-1].status.breaks == ()
