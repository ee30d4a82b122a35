"""Hostile errors: an exception whose `__str__` raises and `sys.exit(obj)` whose `repr` raises,
at import and in forward, are located user errors (the user's file and line, exit 2) that say
`<unprintable ...>`. A failure inside modscope's own work on an iteration is modscope's (shown
with its traceback, never blaming the script) and never half-counted: the step counter and the
model's state agree."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import torch

from modscope.cli import main
from modscope.control import commands as cmd
from modscope.control import internal
from modscope.control import updates as up
from modscope.control.controller import SessionController
from modscope.core.contract.steps import Phase
from modscope.core.script.errors import exception_text
from modscope.core.session import Session
from modscope.core.stats.statediff import StateTracker

HEADER = """\
import sys
import torch
from torch import nn


class Bad(Exception):
    def __str__(self):
        raise RuntimeError("__str__ fails")


class Code:
    def __repr__(self):
        raise RuntimeError("__repr__ fails")

    __str__ = __repr__


class M(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)

    def forward(self, x):
        {forward}
        return self.lin(x).sum()


model = M()
inputs = torch.ones(3, 2)
{top}
"""

RAISE_BAD = 'raise Bad("x")'
EXIT_CODE = "sys.exit(Code())"
FORWARD_LINE = 24
TOP_LINE = 30


def script(tmp_path: Path, *, forward: str = "pass", top: str = "") -> str:
    path = tmp_path / "hostile.py"
    path.write_text(HEADER.format(forward=forward, top=top))
    lines = path.read_text().splitlines()
    assert lines[FORWARD_LINE - 1].strip() == forward
    if top:
        assert lines[TOP_LINE - 1] == top
    return str(path)


@pytest.mark.parametrize(
    ("where", "statement", "words", "exc_type"),
    [
        ("top", RAISE_BAD, "<unprintable Bad>", "Bad"),
        ("top", EXIT_CODE, "sys.exit(<unprintable Code>) was called", "SystemExit"),
        ("forward", RAISE_BAD, "<unprintable Bad>", "Bad"),
        ("forward", EXIT_CODE, "sys.exit(<unprintable Code>) was called", "SystemExit"),
    ],
)
def test_an_unprintable_error_is_located_at_the_users_line_with_exit_2(
    tmp_path, capsys, where, statement, words, exc_type
):
    path = script(tmp_path, **{where: statement})
    assert main(["run", path, "--steps", "2", "--json"]) == 2
    captured = capsys.readouterr()
    lines = [json.loads(line) for line in captured.out.splitlines()]
    error = lines[-1]
    assert error["event"] == "error"
    assert error["file"] == path
    assert error["line"] == (TOP_LINE if where == "top" else FORWARD_LINE)
    assert error["type"] == exc_type
    assert words in error["message"]
    assert error["step"] == (None if where == "top" else 1)
    assert "Traceback" not in captured.err


def test_the_readable_error_names_the_line_and_the_unprintable_exception(tmp_path, capsys):
    path = script(tmp_path, forward=RAISE_BAD)
    assert main(["run", path, "--steps", "1"]) == 2
    err = capsys.readouterr().err
    assert f"Bad in {path}, line {FORWARD_LINE} (at step 1, forward)" in " ".join(err.split())
    assert "<unprintable Bad>" in err
    assert "__str__ fails" not in err


def test_exception_text_never_raises():
    class Weird(Exception):
        def __str__(self):
            return 42  # not a str: str(exc) raises TypeError

    assert exception_text(Weird()) == "<unprintable Weird>"
    assert exception_text(ValueError("plain")) == "plain"
    assert exception_text(ValueError()) == "ValueError"


# -- a failure inside modscope is modscope's, and never half-counted ---------------------------

STEPS = """\
import torch
from torch import nn

torch.manual_seed(0)
model = nn.Linear(4, 1)
inputs = torch.randn(8, 4)
loss_fn = lambda out: out.pow(2).mean()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""

# Raises inside modscope's own frames (a C-level descriptor: no frame of this file shows, as
# none of the user's did when float8 state broke the diff).
BROKEN = torch.Tensor.sub


def steps_script(tmp_path: Path) -> str:
    path = tmp_path / "steps.py"
    path.write_text(STEPS)
    return str(path)


def test_a_record_that_fails_inside_modscope_counts_the_step_and_blames_modscope(
    tmp_path, monkeypatch
):
    s = Session.load(steps_script(tmp_path))
    before = s.model.weight.detach().clone()
    monkeypatch.setattr(StateTracker, "diff", BROKEN)
    result = s.run_iteration()
    error = result.error
    assert error is not None and error.internal
    assert (error.file, error.line) == (None, None)
    assert error.step == 1 and error.phase is Phase.OPTIMIZER
    assert "modscope could not record step 1" in error.message
    assert "bug in modscope" in error.hint and "Step 1 ran and counts" in error.hint
    assert "statediff" in error.traceback or "_build_record" in error.traceback
    # The optimizer step ran: the counter says so, and the state agrees.
    assert s.step == 1 and result.step == 1 and not s.in_iteration
    assert not torch.equal(s.model.weight, before)
    monkeypatch.undo()
    after_one = s.model.weight.detach().clone()
    record = s.run_iteration().record
    assert record.step == 2 and s.step == 2
    # The next diff compares with the state after step 1, taken anew.
    delta = (s.model.weight - after_one).abs().max().item()
    assert record.diff.max_abs_delta["weight"] == pytest.approx(delta)


def test_a_baseline_copy_that_fails_runs_nothing_and_blames_modscope(tmp_path, monkeypatch):
    s = Session.load(steps_script(tmp_path))
    before = s.model.weight.detach().clone()
    monkeypatch.setattr(StateTracker, "reset", BROKEN)
    result = s.run_iteration()
    assert result.error is not None and result.error.internal
    assert "Nothing of step 1 ran" in result.error.hint
    assert s.step == 0 and torch.equal(s.model.weight, before)


def test_headless_says_modscope_failed_with_its_traceback_and_exit_2(tmp_path, capsys, monkeypatch):
    path = steps_script(tmp_path)
    monkeypatch.setattr(StateTracker, "diff", BROKEN)
    assert main(["run", path, "--steps", "3", "--json"]) == 2
    captured = capsys.readouterr()
    (error,) = [json.loads(line) for line in captured.out.splitlines()]
    assert error["event"] == "error" and error["internal"] is True
    assert (error["file"], error["line"], error["step"]) == (None, None, 1)
    assert main(["run", path, "--steps", "3"]) == 2
    err = capsys.readouterr().err
    assert "modscope failed (at step 1, optimizer)" in err
    assert "bug in modscope, not in your script" in " ".join(err.split())
    assert "Traceback (most recent call last)" in err and "--traceback shows" not in err
    assert path not in err


def test_the_app_shows_modscopes_failure_with_a_log_and_counts_the_step(tmp_path, monkeypatch):
    monkeypatch.setattr(internal, "log_path", lambda: str(tmp_path / "modscope.log"))
    s = Session.load(steps_script(tmp_path))
    controller = SessionController(lambda sink, pause: s, script=s.script.path)
    controller.load()
    monkeypatch.setattr(StateTracker, "diff", BROKEN)
    updates = controller.handle(cmd.Step())
    (logged,) = [u for u in updates if isinstance(u, up.InternalError)]
    assert "modscope could not record step 1" in logged.message
    assert logged.log_file == str(tmp_path / "modscope.log")
    assert "Traceback" in (tmp_path / "modscope.log").read_text()
    (done,) = [u for u in updates if isinstance(u, up.PhaseDone)]
    assert done.error is not None and done.error.internal and done.step == 1
    status = [u for u in updates if isinstance(u, up.StatusChanged)][-1].status
    assert status.step == 1 and not status.in_iteration
