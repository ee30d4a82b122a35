"""The app at a break in a watched loop: the live model as the break left it, the steps and
the break shown, nothing run from the keyboard, the session left to the watch."""

from __future__ import annotations

import pytest

import modscope
from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController
from modscope.watching.app import own_loop_view
from tests.helpers import example
from tests.watching.loops import script_objects, train


def test_the_app_at_a_break_shows_the_break_reads_live_values_and_runs_nothing():
    ns = script_objects(example("nan_origin.py"))
    seen: dict[str, object] = {}
    holder: list[modscope.watching.handle.Watch] = []

    def at_break(event):
        w = holder[0]
        view = own_loop_view(w.session, event, w.findings)
        controller = SessionController(
            lambda sink, pause: w.session, script="loop.py", own_loop=view
        )
        loaded = controller.load()
        seen["steps"] = [u.step for u in loaded if isinstance(u, up.PhaseDone)]
        seen["break"] = [u.event.module for u in loaded if isinstance(u, up.BreakHit)]
        seen["notes"] = next(u.notes for u in loaded if isinstance(u, up.Loaded))
        stepped = controller.handle(cmd.Step())
        seen["refused"] = [u.message for u in stepped if isinstance(u, up.Notice)]
        reloaded = controller.handle(cmd.Reload())
        seen["reload_refused"] = [u.message for u in reloaded if isinstance(u, up.Notice)]
        seen["step_after"] = w.session.step
        page = controller.handle(cmd.ReadValues("blocks.1.gate.offset", 0, 8))
        seen["offset"] = next(u for u in page if isinstance(u, up.ValuesRead)).values
        controller.close()
        seen["still_armed"] = bool(w.session.armed)
        raise modscope.BreakError(event, "stop")

    with (
        pytest.raises(modscope.BreakError),
        modscope.watch(ns["model"], ns["optimizer"], breaks=["nan"], on_break=at_break) as w,
    ):
        holder.append(w)
        train(ns, 5)
    assert seen["steps"] == [1, 2]
    assert seen["break"] == ["blocks.1.gate"]
    assert "your own loop ran 2 step(s)" in seen["notes"][0]
    assert any("your own loop runs the iterations" in m for m in seen["refused"])
    # Reload would close the watch's session (its breaks and hooks): refused the same way.
    assert any("your own loop runs the iterations" in m for m in seen["reload_refused"])
    assert seen["step_after"] == 2
    assert min(seen["offset"]) < 0  # the offset the update of step 2 pushed below zero
    assert seen["still_armed"]  # closing the app left the watch's session as it was
    assert dict(ns["model"]._forward_hooks) == {}
