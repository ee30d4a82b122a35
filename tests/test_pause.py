"""Pause breakpoints in the engine: the worker blocks in the hook until resumed or abandoned."""

from __future__ import annotations

import os
import threading

import pytest

from modscope.core.hooks import HookSpec
from modscope.core.pause import PauseGate, Resume
from modscope.core.session import Session

POWLOG = os.path.join(os.path.dirname(os.path.dirname(__file__)), "examples", "powlog.py")


def paused_session() -> tuple[Session, PauseGate, threading.Event]:
    arrived = threading.Event()
    gate = PauseGate(on_pause=lambda draft: arrived.set())
    session = Session.load(POWLOG, pause=gate)
    session.attach(HookSpec.parse("powModel:forward:pause"))
    return session, gate, arrived


def start(session: Session) -> tuple[threading.Thread, list]:
    results: list = []
    thread = threading.Thread(target=lambda: results.append(session.run_iteration()))
    thread.start()
    return thread, results


def test_pause_stops_inside_the_module_and_continue_finishes_the_iteration():
    session, gate, arrived = paused_session()
    thread, results = start(session)
    assert arrived.wait(30)
    assert gate.paused is not None and gate.paused.module == "powModel"
    assert not results  # the iteration is held inside powModel's forward hook
    assert gate.resume(Resume.CONTINUE)
    thread.join(30)
    [result] = results
    assert result.record.state["powModel.powParam"].values[0] == pytest.approx(1.1034, abs=5e-5)
    pause_event = next(e for e in result.events if e.module == "powModel")
    assert pause_event.output[0].values[0] == pytest.approx(125.0)  # what arrived: x ** q


def test_abandon_unwinds_cleanly_and_the_session_goes_on():
    session, gate, arrived = paused_session()
    thread, results = start(session)
    assert arrived.wait(30)
    gate.abandon()
    thread.join(30)
    assert not thread.is_alive()
    [result] = results
    assert result.abandoned and result.record is None and session.step == 0
    assert not session.in_iteration and not session.hooks._transient
    assert session.model.powModel.powParam.item() == 1.0
    gate.reopen()
    arrived.clear()
    thread, results = start(session)
    assert arrived.wait(30)
    assert gate.resume(Resume.RUN_THROUGH)
    thread.join(30)
    assert results[0].record.step == 1
    session.close()
    assert not session.model.powModel._forward_hooks


def test_abandon_before_the_pause_is_reached_never_blocks():
    session, gate, _ = paused_session()
    gate.abandon()
    result = session.run_iteration()
    assert result.abandoned
    assert not gate.resume()


def test_run_through_skips_pauses_until_the_request_ends():
    session, gate, arrived = paused_session()
    session.attach(HookSpec.parse("logModel:forward:pause"))
    thread, results = start(session)
    assert arrived.wait(30) and gate.paused.module == "powModel"
    arrived.clear()
    assert gate.resume(Resume.RUN_THROUGH)  # logModel's pause is skipped
    thread.join(30)
    assert results[0].record.step == 1 and not arrived.is_set()
    gate.request_ended()
    thread, results = start(session)
    assert arrived.wait(30) and gate.paused.module == "powModel"
    arrived.clear()
    assert gate.resume(Resume.CONTINUE)
    assert arrived.wait(30) and gate.paused.module == "logModel"
    assert gate.resume(Resume.CONTINUE)
    thread.join(30)
    assert results[0].record.step == 2
    session.close()
