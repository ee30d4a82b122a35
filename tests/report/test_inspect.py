"""`modscope.inspect()` where no app can run: one line on stderr saying why, then the headless
tree and findings on stdout; nothing of textual imported, every hook left as it was."""

from __future__ import annotations

import subprocess
import sys
import textwrap
import threading
from contextlib import redirect_stderr, redirect_stdout
from io import StringIO

import torch

import modscope


class Pow(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.powParam = torch.nn.Parameter(torch.tensor(1.0))

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.powParam * x**q


class PowLog(torch.nn.Module):
    def __init__(self) -> None:
        super().__init__()
        self.powModel = Pow()
        self.helpers = [Pow()]  # not registered: a finding

    def forward(self, x: torch.Tensor, q: torch.Tensor) -> torch.Tensor:
        return self.powModel(x, q)


def test_not_a_terminal_prints_the_tree_and_findings_and_returns(capsys):
    model = PowLog()
    handle = model.powModel.register_forward_hook(lambda m, a, o: None)
    try:
        result = modscope.inspect(model, inputs=(torch.tensor(5.0), torch.tensor(3.0)))
    finally:
        handle.remove()
    assert result is None
    out, err = capsys.readouterr()
    [line] = err.strip().splitlines()
    assert line.startswith("modscope.inspect: ") and "not a terminal" in line
    assert "printing the tree and findings instead" in line
    assert "powModel Pow" in out and "powParam" in out
    assert "unregistered-module" in out and "helpers" in out
    assert "1 error" in out


async def test_inside_a_running_event_loop_it_says_so():
    # A notebook runs its cells inside an event loop, where App.run() cannot start.
    model = PowLog()
    out, err = StringIO(), StringIO()
    with redirect_stdout(out), redirect_stderr(err):
        assert modscope.inspect(model) is None
    assert "running asyncio event loop" in err.getvalue()
    assert "powModel Pow" in out.getvalue()


def test_a_model_that_is_no_module_is_refused():
    try:
        modscope.inspect(object())
    except TypeError as exc:
        assert "not an nn.Module" in str(exc)
    else:
        raise AssertionError("inspect() accepted an object that is no nn.Module")


def test_import_modscope_is_cheap_and_the_fallback_imports_no_textual():
    code = textwrap.dedent(
        """
        import sys
        import modscope
        heavy = [m for m in ("torch", "textual", "rich") if m in sys.modules]
        print("after import:", heavy)
        import torch
        model = torch.nn.Sequential(torch.nn.Linear(2, 2))
        modscope.inspect(model)
        print("textual:", any(m.startswith("textual") for m in sys.modules))
        """
    )
    done = subprocess.run(
        [sys.executable, "-c", code], capture_output=True, text=True, check=True, timeout=120
    )
    assert "after import: []" in done.stdout
    assert "textual: False" in done.stdout
    assert "stdin is not a terminal" in done.stderr or "stdout is not a terminal" in done.stderr


class _Terminal(StringIO):
    """A stream that says it is a terminal."""

    def isatty(self) -> bool:
        return True


def test_from_another_thread_it_falls_back_instead_of_crashing(monkeypatch):
    monkeypatch.setattr(sys, "stdin", _Terminal())
    err = StringIO()
    results: list[object] = []

    def work() -> None:
        model = PowLog()
        with redirect_stderr(err), redirect_stdout(StringIO()):
            results.append(modscope.inspect(model, inputs=(torch.tensor(5.0), torch.tensor(3.0))))

    with redirect_stdout(_Terminal()):
        worker = threading.Thread(target=work)
        worker.start()
        worker.join(60)
    assert results == [None]
    assert "not on the main thread" in err.getvalue()


def test_twice_in_a_row_without_a_terminal_leaves_every_hook_as_it_was(capsys):
    model = PowLog()
    handle = model.powModel.register_forward_hook(lambda m, a, o: None)
    hooks_before = dict(model.powModel._forward_hooks)
    for _ in range(2):
        modscope.inspect(model, inputs=(torch.tensor(5.0), torch.tensor(3.0)), hooks=["*:forward"])
        assert dict(model.powModel._forward_hooks) == hooks_before
        assert not model._forward_hooks and not model._forward_pre_hooks
    handle.remove()
    err = capsys.readouterr().err
    assert err.count("modscope.inspect: ") == 2
