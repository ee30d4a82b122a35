"""The script's output at any volume and on any stream: prints cost what they print, progress
lines (`\\r`) collapse to their last state, stdout under `--json` is strict JSON whatever the
script or its threads write (at the C level too), and neither `os.close(1)` nor `os._exit()`
takes a command down."""

from __future__ import annotations

import io
import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
from rich.console import Console
from rich.text import Text

from modscope.core.script.interrupts import ExitIntercepted
from modscope.core.script.loader import load_script
from modscope.core.script.print_capture import captured_prints
from modscope.report.common import ScriptPrints
from modscope.tui.log_pane import LOG_LIMIT, LogPane
from tests.helpers import ROOT
from tests.tui.tui_helpers import settle

MODEL = """\
import torch
from torch import nn
model = nn.Linear(2, 1)
inputs = torch.ones(2)
loss_fn = lambda out: out.square().sum()
optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
"""

PROGRESS = """\
for i in range(50_000):
    print(f"step {i + 1}/50000", end="\\r")
print()
"""


def write(folder: Path, body: str, name: str = "script.py") -> str:
    path = folder / name
    path.write_text(body)
    return str(path)


def modscope(*argv: str) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [sys.executable, "-m", "modscope", *argv],
        capture_output=True,
        text=True,
        cwd=ROOT,
        timeout=120,
    )


def strict_lines(text: str) -> list[dict]:
    def refuse(token: str) -> None:
        raise ValueError(f"bare {token} in JSON")

    return [json.loads(line, parse_constant=refuse) for line in text.splitlines()]


# -- volume ----------------------------------------------------------------------------------


def test_progress_prints_reach_the_sink_once_in_their_last_state():
    lines: list[str] = []
    started = time.perf_counter()
    with captured_prints(lines.append):
        for i in range(100_000):
            print(f"step {i + 1}/100000", end="\r")
        print()
        print("done\rDONE")
        print("a\r\nb", end="")
    # Each write costs the same whatever came before it on the line (it was a rescan of the
    # whole line, minutes for this one).
    assert time.perf_counter() - started < 5
    assert lines == ["step 100000/100000", "DONE", "a", "b"]


def test_many_lines_each_reach_the_sink():
    lines: list[str] = []
    with captured_prints(lines.append):
        for i in range(100_000):
            print(i)
        print("x", "y", sep="\t", end="")
    assert len(lines) == 100_001
    assert lines[:2] == ["0", "1"] and lines[-2:] == ["99999", "x\ty"]


def test_prints_under_a_progress_bar_are_printed_in_blocks():
    # Each print on the bar's console redraws the bar, so the lines go there in blocks.
    console = Console(file=io.StringIO(), width=80)
    calls: list[object] = []
    print_on_console = console.print

    def counting_print(*objects: object, **kwargs: object) -> None:
        calls.append(objects)
        print_on_console(*objects, **kwargs)  # type: ignore[arg-type]

    console.print = counting_print  # type: ignore[method-assign]
    prints = ScriptPrints()
    prints.console = console
    try:
        with captured_prints(prints):
            for i in range(10_000):
                print(f"line {i}\x1b[2J")
    finally:
        prints.console = None
    assert console.file.getvalue().splitlines() == [f"line {i}\\x1b[2J" for i in range(10_000)]
    assert 1 <= len(calls) <= 100


def test_a_progress_line_is_printed_once_on_stderr(tmp_path):
    path = write(tmp_path, PROGRESS + MODEL)
    result = modscope("run", path, "--steps", "1", "--json")
    assert result.returncode == 0, result.stderr
    assert result.stderr.count("step 50000/50000") == 1
    assert "step 49999/50000" not in result.stderr and "\\r" not in result.stderr


# -- streams ---------------------------------------------------------------------------------

TICKING_THREAD = """\
import os
import threading
import time

def tick():
    for i in range(40):
        print(f"\\x1b[31mtick {i}\\x1b[0m")
        os.write(1, b"raw tick\\n")
        time.sleep(0.01)

threading.Thread(target=tick).start()
"""


def test_under_json_a_thread_of_the_script_never_writes_on_stdout(tmp_path):
    # The thread prints for about 0.4 s, before, between and after the steps: some of its lines
    # come while no user code runs (its prints are not captured then) and after the command.
    path = write(tmp_path, TICKING_THREAD + MODEL)
    result = modscope("run", path, "--steps", "3", "--json")
    assert result.returncode == 0, result.stderr
    events = strict_lines(result.stdout)
    assert [e["step"] for e in events] == [1, 2, 3]
    assert result.stderr.count("raw tick") == 40
    assert "\\x1b[31mtick 39\\x1b[0m" in result.stderr.splitlines()
    assert "\x1b" not in result.stderr


CLOSES_STDOUT = "import os\nos.close(1)\nprint('after the close')\n" + MODEL


def test_a_closed_stdout_at_import_is_harmless_under_json(tmp_path):
    path = write(tmp_path, CLOSES_STDOUT)
    result = modscope("run", path, "--steps", "2", "--json")
    assert result.returncode == 0, result.stderr
    assert [e["step"] for e in strict_lines(result.stdout)] == [1, 2]
    assert "after the close" in result.stderr and "Traceback" not in result.stderr


def test_a_closed_stdout_at_import_is_harmless_to_the_tables(tmp_path):
    path = write(tmp_path, CLOSES_STDOUT)
    result = modscope("run", path, "--steps", "2")
    assert result.returncode == 0, result.stderr
    assert "Iterations" in result.stdout and "Traceback" not in result.stderr


EXITS_IN_FORWARD = """\
import os
import torch
from torch import nn

class Exits(nn.Module):
    def __init__(self):
        super().__init__()
        self.lin = nn.Linear(2, 1)
        self.calls = 0

    def forward(self, x):
        self.calls += 1
        if self.calls == 2:
            os._exit(0)
        return self.lin(x)

model = Exits()
inputs = torch.ones(2)
"""


def test_os_exit_in_forward_is_a_located_error(tmp_path):
    path = write(tmp_path, EXITS_IN_FORWARD)
    result = modscope("run", path, "--steps", "3", "--json")
    assert result.returncode == 2, result.stderr
    step, error = strict_lines(result.stdout)
    assert step["step"] == 1
    assert error["event"] == "error" and error["step"] == 2 and error["phase"] == "forward"
    assert (error["file"], error["line"]) == (path, 14)
    assert error["message"].startswith("os._exit(0) was called")
    assert "line 14" in result.stderr


def test_os_exit_at_import_is_a_load_error(tmp_path):
    path = write(tmp_path, "import os\nos._exit(3)\n" + MODEL)
    result = modscope("run", path, "--json")
    assert result.returncode == 2, result.stderr
    [error] = strict_lines(result.stdout)
    assert (error["phase"], error["line"]) == ("load", 2)
    assert error["message"].startswith("os._exit(3) was called while the script loaded")


EXITS_IN_EVAL = EXITS_IN_FORWARD.replace("if self.calls == 2:", "if not self.training:")


def test_os_exit_in_the_doctors_eval_probe_is_a_note(tmp_path):
    path = write(tmp_path, EXITS_IN_EVAL)
    result = modscope("check", path, "--json")
    assert result.returncode == 0, result.stderr
    [report] = strict_lines(result.stdout)
    assert report["steps_run"] == 1
    assert "could not run: ExitIntercepted: os._exit(0) was called" in result.stderr
    assert f"{path}:14" in result.stderr


def test_os_exit_is_the_real_one_again_once_no_user_code_runs():
    real = os._exit
    other_entered, other_may_leave = threading.Event(), threading.Event()

    def other_session() -> None:
        with captured_prints(None):
            other_entered.set()
            other_may_leave.wait(10)

    other = threading.Thread(target=other_session)
    with captured_prints(None):
        other.start()
        other_entered.wait(10)
        with pytest.raises(ExitIntercepted):
            os._exit(0)
    # The other thread still runs user code: the guard stays until it leaves, then goes.
    assert os._exit is not real
    other_may_leave.set()
    other.join(10)
    assert os._exit is real


def test_os_exit_of_a_forked_child_still_ends_the_child(tmp_path):
    # A DataLoader worker (a forked process) ends with os._exit: only this process raises.
    body = "import os\npid = os.fork()\nif pid == 0:\n    os._exit(7)\n"
    path = write(tmp_path, body + "_, status = os.waitpid(pid, 0)\n" + MODEL)
    loaded = load_script(path, sink=lambda line: None)
    assert os.waitstatus_to_exitcode(loaded.module.status) == 7


# -- the app's log ---------------------------------------------------------------------------


async def test_the_apps_log_shows_a_progress_line_in_its_last_state(make_app, tmp_path):
    path = write(tmp_path, PROGRESS + MODEL)
    app = make_app(path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        shown = list(app.query_one(LogPane).plain_lines)
        assert shown[0] == "step 50000/50000"
        assert not any("\\r" in line for line in shown)
        assert app.is_running


async def test_a_burst_of_prints_writes_only_what_the_log_keeps(make_app, tmp_path):
    path = write(tmp_path, MODEL)
    app = make_app(path)
    async with app.run_test(size=(120, 40)) as pilot:
        await settle(app, pilot)
        log = app.query_one(LogPane)
        written: list[str] = []
        write_text = log.write

        def counting_write(text: Text, **kwargs: object) -> LogPane:
            written.append(text.plain)
            return write_text(text, **kwargs)  # type: ignore[arg-type]

        log.write = counting_write  # type: ignore[method-assign]
        for i in range(10_000):
            log.printed(f"line {i}")
        await pilot.pause()
        assert len(written) == LOG_LIMIT
        assert written[0] == f"line {10_000 - LOG_LIMIT}" and written[-1] == "line 9999"
        assert log.plain_lines[-1] == "line 9999" and len(log.plain_lines) == LOG_LIMIT
