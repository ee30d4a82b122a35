"""User code that raises what is not an `Exception` (sys.exit(), KeyboardInterrupt, GeneratorExit)
is a user error like any other; only a real Ctrl-C stops the run."""

from __future__ import annotations

import os
import signal
import threading

import pytest
import torch
from torch import nn

from modscope.core.contract.steps import Phase
from modscope.core.script.interrupts import catching_ctrl_c, is_real_interrupt
from modscope.core.session import Session


class Raises(nn.Module):
    def __init__(self, exc: BaseException, at_call: int = 2) -> None:
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.exc = exc
        self.at_call = at_call
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == self.at_call:
            raise self.exc
        return self.lin(x).sum()


def session_of(exc: BaseException) -> Session:
    model = Raises(exc)
    return Session.from_objects(
        model,
        inputs=torch.ones(2),
        optimizer=torch.optim.SGD(model.parameters(), lr=0.1),
        origin=__file__,
    )


@pytest.mark.parametrize(
    ("exc", "words"),
    [
        (SystemExit(3), "sys.exit(3) was called"),
        (KeyboardInterrupt(), "KeyboardInterrupt was raised by the code"),
        (GeneratorExit(), "GeneratorExit was raised"),
    ],
)
def test_a_base_exception_in_forward_is_a_located_user_error(exc, words):
    s = session_of(exc)
    with catching_ctrl_c():
        assert s.run_iteration().record.step == 1
        result = s.run_iteration()
    assert result.error is not None and words in result.error.message
    assert result.error.phase is Phase.FORWARD and result.error.step == 2
    assert result.error.file == __file__ and result.error.line is not None
    assert not s.in_iteration
    # The session goes on.
    with catching_ctrl_c():
        assert s.run_iteration().record.step == 2


def test_a_keyboard_interrupt_on_another_thread_is_never_a_real_ctrl_c():
    seen: list[bool] = []
    t = threading.Thread(target=lambda: seen.append(is_real_interrupt(KeyboardInterrupt())))
    t.start()
    t.join()
    assert seen == [False]


def test_a_real_ctrl_c_still_stops_the_iteration():
    s = session_of(SystemExit(0))
    s.model.forward = lambda x: os.kill(os.getpid(), signal.SIGINT)  # type: ignore[method-assign]
    with catching_ctrl_c(), pytest.raises(KeyboardInterrupt) as caught:
        s.run_iteration()
    assert getattr(caught.value, "_modscope_from_signal", False)  # marked by the handler
    assert not s.in_iteration and s.step == 0


def test_check_says_first_that_a_step_raised_before_its_findings(tmp_path, capsys):
    from modscope.cli import main

    script = tmp_path / "exits.py"
    script.write_text(
        "import sys\nimport torch\nfrom torch import nn\n\n\n"
        "class Net(nn.Module):\n"
        "    def __init__(self):\n        super().__init__()\n"
        "        self.lin = nn.Linear(2, 1)\n\n"
        "    def forward(self, x):\n        sys.exit(3)\n\n\n"
        "model = Net()\ninputs = torch.randn(4, 2)\n"
        "optimizer = torch.optim.SGD(model.parameters(), lr=0.1)\n"
    )
    assert main(["check", str(script)]) == 2
    out, err = capsys.readouterr()
    assert "(0 steps run; step 1 raised, below)" in " ".join(out.split()[:11])
    assert "SystemExit" in err and "line 12 (at step 1, forward)" in err
