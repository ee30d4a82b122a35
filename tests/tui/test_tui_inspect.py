"""`modscope.inspect()` opening the app on live objects, driven by keys through Textual's
auto-pilot: it returns when the user quits, and every hook dict is exactly as before."""

from __future__ import annotations

import threading

import pytest
import torch
from textual.pilot import Pilot
from torch.nn.modules import module as torch_module

import modscope
from modscope import live
from modscope.tui.app import ModscopeApp
from modscope.tui.hooks_pane import HooksPane
from modscope.tui.status_line import StatusLine
from tests.helpers import hook_state
from tests.tui.tui_helpers import press, settle

# The caller's own legacy hook below: PyTorch warns about it at every forward.
pytestmark = pytest.mark.filterwarnings("ignore:Using a non-full backward hook:FutureWarning")


class PowModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.powParam = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.powParam * x**q


class LogModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.logParam = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.logParam * torch.log(x)


class PowLogModel(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.powModel = PowModel()
        self.logModel = LogModel()

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.logModel(self.powModel(x, q))


def batch() -> tuple[torch.Tensor, torch.Tensor]:
    return torch.tensor(5.0, requires_grad=True), torch.tensor(3.0, requires_grad=True)


def on_the_callers_side(module, args):  # a hook of the user's, left alone
    return None


def everywhere(module, args, output):  # a global module hook of another library's
    return None


def test_inspect_runs_the_app_and_leaves_every_hook_as_it_was(monkeypatch):
    model = PowLogModel()
    model.logModel.register_forward_pre_hook(on_the_callers_side)
    model.powModel.register_backward_hook(lambda m, gi, go: None)  # legacy: flag False
    model.powModel.powParam.register_post_accumulate_grad_hook(lambda p: None)
    global_handle = torch_module.register_module_forward_hook(everywhere)
    seen: dict[str, object] = {}

    async def user(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, ModscopeApp)
        await settle(app, pilot)
        seen["script"] = app.query_one(StatusLine).text.split(" │ ")[0]
        app.go_to("logModel")
        await settle(app, pilot)
        seen["hooks"] = [(h.owner, h.kind) for h in app.query_one(HooksPane).hooks]
        # A forward hook doubling logModel's output (Hook Code 2), and a full backward hook
        # changing a gradient (it sets _is_full_backward_hook, which detach must restore).
        await press(app, pilot, "h", "down", "tab", "down", "tab", "2", "enter")
        await press(app, pilot, "h", "down", "down", "tab", "down", "down", "enter")
        await press(app, pilot, "s")  # stops at the powModel pause from `hooks=`
        seen["paused"] = app.query_one(StatusLine).text
        await press(app, pilot, "s")  # past it, to the end of the iteration
        seen["status"] = app.query_one(StatusLine).text
        seen["during"] = hook_state(model)
        await press(app, pilot, "s")
        await pilot.press("q")  # quits at the pause: the iteration is abandoned

    run = ModscopeApp.run
    monkeypatch.setattr(live, "why_no_app", lambda: None)
    monkeypatch.setattr(
        ModscopeApp,
        "run",
        lambda self, **kw: run(self, headless=True, size=(100, 32), auto_pilot=user),
    )
    try:
        before = hook_state(model)
        result = modscope.inspect(
            model,
            inputs=batch,
            loss_fn=lambda z: z,
            hooks=["powModel:forward:pause"],
        )
        after = hook_state(model)
    finally:
        global_handle.remove()
    assert result is None
    assert seen["script"] == f"test_tui_inspect.py:{_INSPECT_LINE}"
    assert ("script", "forward-pre") in seen["hooks"] and ("global", "forward") in seen["hooks"]
    assert "loss 9.6566" in str(seen["status"])  # z, the loss here, with the output doubled
    assert seen["during"] != before
    assert "paused in powModel (forward)" in str(seen["paused"])
    assert after == before
    assert model.powModel._is_full_backward_hook is False
    assert model.logModel._is_full_backward_hook is None
    assert not any(t.name == "modscope-session" for t in threading.enumerate())


# The line of the `modscope.inspect(` call above: the app names it as where it was opened.
_INSPECT_LINE = next(
    i
    for i, line in enumerate(open(__file__).read().splitlines(), 1)  # noqa: SIM115
    if line.strip() == "result = modscope.inspect("
)


def test_inspect_twice_in_a_row_opens_twice_and_restores_every_hook(monkeypatch):
    model = PowLogModel()
    steps: list[str] = []

    async def user(pilot: Pilot) -> None:
        app = pilot.app
        assert isinstance(app, ModscopeApp)
        await press(app, pilot, "s", "s")
        steps.append(app.query_one(StatusLine).text)
        await pilot.press("q")

    run = ModscopeApp.run
    monkeypatch.setattr(live, "why_no_app", lambda: None)
    monkeypatch.setattr(
        ModscopeApp,
        "run",
        lambda self, **kw: run(self, headless=True, size=(100, 32), auto_pilot=user),
    )
    before = hook_state(model)
    for _ in range(2):
        modscope.inspect(model, inputs=batch, loss_fn=lambda z: z, hooks=["*:forward"])
        assert hook_state(model) == before
    # Each session counts its own steps on the same live objects.
    assert ["step 2" in s for s in steps] == [True, True]
    assert not any(t.name == "modscope-session" for t in threading.enumerate())
