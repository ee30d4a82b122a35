"""Hostile flags and signals: a non-finite `scale=` or break threshold is refused like any bad
spec, and a real Ctrl-C stops a headless run with exit 130 whatever SIGINT handler the script
installed."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading

import pytest

from modscope.cli import main
from modscope.core.contract.hook_spec import HookAction, HookKind, HookSpec, HookSpecError
from modscope.core.script.interrupts import catching_ctrl_c
from tests.helpers import POWLOG, ROOT

# -- non-finite numbers in --hook and --break -------------------------------------------------


@pytest.mark.parametrize(
    ("factor", "what"),
    [("nan", "NaN"), ("inf", "infinite"), ("-inf", "infinite"), ("1e999", "infinite")],
)
def test_a_non_finite_scale_factor_is_refused_with_exit_2(capsys, factor, what):
    spec = f"powModel:forward:scale={factor}"
    assert main(["run", POWLOG, "--steps", "1", "--hook", spec]) == 2
    captured = capsys.readouterr()
    assert captured.out == ""
    assert f"hook spec {spec!r}: scale needs a finite number, e.g. scale=2" in captured.err
    assert f"{factor} is {what}" in captured.err


def test_a_non_finite_scale_factor_under_json_is_one_argument_error(capsys):
    assert main(["run", POWLOG, "--json", "--hook", "powModel:forward:scale=nan"]) == 2
    (error,) = [json.loads(line) for line in capsys.readouterr().out.splitlines()]
    assert error["event"] == "error" and error["phase"] == "arguments"
    assert "scale needs a finite number" in error["message"]


def test_a_hook_spec_built_from_the_dialog_refuses_a_non_finite_factor():
    with pytest.raises(HookSpecError, match="scale needs a finite number"):
        HookSpec("powModel", HookKind.FORWARD, HookAction.SCALE, float("inf"))
    assert HookSpec("powModel", HookKind.FORWARD, HookAction.SCALE, 1e300).factor == 1e300
    assert HookSpec.parse("powModel:forward:scale=-0.5").factor == -0.5


@pytest.mark.parametrize(
    "condition", ["loss>nan", "grad-norm>inf", "loss<-inf", "powModel:output-absmax>1e999"]
)
def test_a_non_finite_break_threshold_is_refused_pointing_at_nan(capsys, condition):
    assert main(["run", POWLOG, "--steps", "1", "--break", condition]) == 2
    err = capsys.readouterr().err
    assert f"break condition {condition!r}: compare with a finite number" in err
    assert "use `nan`" in err


# -- a script's own SIGINT handler -------------------------------------------------------------

SLOW = ROOT / "tests" / "reliability_scripts" / "slow.py"
"""The shared slow model; each test puts a SIGINT handler of the script's own in front of it."""


HANDLERS = {
    "default_int_handler": "signal.signal(signal.SIGINT, signal.default_int_handler)",
    "raising": (
        "def stop(signum, frame):\n"
        "    raise KeyboardInterrupt('stopping')\n"
        "signal.signal(signal.SIGINT, stop)"
    ),
    "graceful": (
        "stopping = []\n"
        "def stop(signum, frame):\n"
        "    stopping.append(signum)\n"
        "signal.signal(signal.SIGINT, stop)\n"
        "assert signal.getsignal(signal.SIGINT) is stop"
    ),
}


@pytest.mark.parametrize("handler", list(HANDLERS))
def test_ctrl_c_stops_a_run_with_130_whatever_handler_the_script_installed(tmp_path, handler):
    script = tmp_path / "slow.py"
    script.write_text(f"import signal\n{HANDLERS[handler]}\n\n{SLOW.read_text()}")
    proc = subprocess.Popen(
        [sys.executable, "-m", "modscope", "run", str(script), "--steps", "1000", "--json"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
        cwd=ROOT,
        env={**os.environ, "SLOW_DELAY": "0.1"},
    )
    err: list[str] = []
    third = threading.Event()

    def read() -> None:
        assert proc.stderr is not None
        for line in proc.stderr:
            err.append(line)
            if "forward 3" in line:
                third.set()
        third.set()

    reader = threading.Thread(target=read, daemon=True)
    reader.start()
    if not third.wait(60):
        proc.kill()
        pytest.fail("the run never got going")
    proc.send_signal(signal.SIGINT)
    assert proc.stdout is not None
    out = proc.stdout.read()
    assert proc.wait(timeout=30) == 130, "".join(err)
    reader.join(10)
    assert "modscope: interrupted" in "".join(err)
    assert "raised by the code" not in "".join(err)
    steps = [e["step"] for e in map(json.loads, out.splitlines()) if e["event"] == "step"]
    assert steps[:2] == [1, 2] and steps == list(range(1, len(steps) + 1))


def test_the_scripts_handler_is_kept_aside_and_the_one_before_comes_back():
    def before(signum, frame):
        pass

    def mine(signum, frame):
        pass

    previous = signal.signal(signal.SIGINT, before)
    try:
        with catching_ctrl_c():
            held = signal.getsignal(signal.SIGINT)
            assert signal.signal(signal.SIGINT, mine) is before
            assert signal.getsignal(signal.SIGINT) is mine  # what the script installed
            with pytest.raises(TypeError):
                signal.signal(signal.SIGINT, "nonsense")
            with pytest.raises(KeyboardInterrupt):
                signal.raise_signal(signal.SIGINT)  # modscope's handler still holds SIGINT
            assert signal.signal(signal.SIGTERM, signal.getsignal(signal.SIGTERM)) is not mine
        assert signal.getsignal(signal.SIGINT) is before
        assert held is before
    finally:
        signal.signal(signal.SIGINT, previous)
