"""The layers view's protocol: `CollectLayers` starts the statistics, `LayersSeen` brings them
after each completed iteration; nothing is attached before, and nothing is left after."""

from __future__ import annotations

from modscope.control import commands as cmd
from modscope.control import updates as up
from modscope.control.controller import SessionController, script_factory
from tests.helpers import example

HEALTH = example("layer_health.py")


def controller() -> SessionController:
    c = SessionController(script_factory(HEALTH), script=HEALTH)
    c.load()
    return c


def seen(updates) -> list[up.LayersSeen]:
    return [u for u in updates if isinstance(u, up.LayersSeen)]


def hooked(c: SessionController) -> int:
    assert c.session is not None
    return sum(len(m._forward_hooks) for m in c.session.model.modules())


def test_nothing_is_collected_or_attached_until_the_view_asks():
    c = controller()
    assert hooked(c) == 0
    assert seen(c.handle(cmd.Step())) == []
    c.handle(cmd.CollectLayers())
    assert hooked(c) == 6  # every module: the root, hidden, act, gate_in, gate, out
    (layers,) = seen(c.handle(cmd.Step()))
    assert layers.step.step == 2
    act = {m.path: m for m in layers.step.modules}["act"]
    assert act.dead == 1.0 and act.output.calls == 1
    c.close()
    assert c.session is None


def test_a_partial_iteration_sends_its_statistics_when_it_completes():
    c = controller()
    c.handle(cmd.CollectLayers())
    assert seen(c.handle(cmd.NextPhase())) == []  # forward only so far
    assert seen(c.handle(cmd.NextPhase())) == []  # backward
    (layers,) = seen(c.handle(cmd.NextPhase()))  # the optimizer step ends the iteration
    assert layers.step.step == 1
    assert {m.path: m for m in layers.step.modules}["out"].update_ratio is not None


def test_reload_keeps_watching_the_new_model_and_rewind_drops_what_it_reran():
    c = controller()
    c.handle(cmd.CollectLayers())
    c.handle(cmd.Reload())
    assert hooked(c) == 6
    c.handle(cmd.Step())
    c.handle(cmd.Step())
    c.handle(cmd.GoToStep(1))
    (layers,) = seen(c.handle(cmd.Step()))
    assert layers.step.step == 2
    assert all(m.output.calls == 1 for m in layers.step.modules)


def test_watching_twice_attaches_once():
    c = controller()
    first = c.handle(cmd.CollectLayers())
    second = c.handle(cmd.CollectLayers())
    assert [u for u in first if isinstance(u, up.Notice)]
    assert not [u for u in second if isinstance(u, up.Notice)]
    assert hooked(c) == 6
